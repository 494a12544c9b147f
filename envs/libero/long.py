"""LIBERO-10 (LIBERO-Long): ten two-stage tasks, LIBERO's instruction strings
and order; 520 steps.

One model serves all ten scenes: a stove (knob, two burners) and a wooden
cabinet (top and bottom drawers) stand on the table in every scene; the
groceries, mugs, moka pots, bowl and book, and the heavy free fixtures
(basket, caddy, microwave, plates), are placed by each task's layout or parked
off the table. Left / right are as seen from the agentview camera (+y is
right).

Two-stage goals run in order; the expert works on the first unsatisfied
stage. Where both stages put objects into / onto one fixture, each has its own
slot (basket halves, burners) so they do not land on each other; a basket
slot's IN region still spans the whole basket.
"""
from __future__ import annotations

import dataclasses

from envs import predicates as P
from envs.libero import long_objects as L
from envs.libero import objects as O
from envs.scene import Body
from envs.tabletop import Entity, SuiteSpec, Task

STOVE = (0.60, -0.24)
CABINET = (0.66, 0.30)
BASKET = (0.62, 0.02, 0.0, 0.0)
FRONT_L, FRONT_R = (0.42, -0.10), (0.42, 0.12)

SOUP, TOMATO, CHEESE, BUTTER = "alphabet_soup", "tomato_sauce", "cream_cheese", "butter"
PUDDING, MOKA1, MOKA2, BOWL = "chocolate_pudding", "moka_pot_1", "moka_pot_2", "akita_black_bowl"
WHITE_MUG, YW_MUG, BOOK = "white_mug", "yellow_and_white_mug", "book"
BASKET_N, CADDY, MICRO, PLATE_L, PLATE_R = "basket", "desk_caddy", "microwave", "plate_1", "plate_2"
STOVE_N, KNOB, BURNER1, BURNER2 = "flat_stove", "flat_stove_knob", "flat_stove_burner_1", \
    "flat_stove_burner_2"
BOTTOM = "wooden_cabinet_bottom_drawer"
SLOT1, SLOT2 = "basket_slot_1", "basket_slot_2"
DOOR = "microwave_door"

FIXTURE_NOISE = (0.01, 0.01, 0.05)


def _basket_two_in(a, b):
  layout = {BASKET_N: BASKET, a: (*FRONT_L, 0.0, 0.0), b: (*FRONT_R, 0.0, 0.0)}
  return layout, ((P.IN, a, SLOT1), (P.IN, b, SLOT2))


def _tasks():
  """(instruction, layout, goals, joints) in LIBERO-10 order."""
  t = []
  lay, goals = _basket_two_in(SOUP, TOMATO)
  t.append(("put both the alphabet soup and the tomato sauce in the basket", lay, goals, {}))
  lay, goals = _basket_two_in(CHEESE, BUTTER)
  t.append(("put both the cream cheese box and the butter in the basket", lay, goals, {}))
  t.append(("turn on the stove and put the moka pot on it",
            {MOKA1: (0.42, 0.02, 0.0, 0.0)},
            ((P.TURNON, KNOB, ""), (P.ON, MOKA1, BURNER1)), {}))
  t.append(("put the black bowl in the bottom drawer of the cabinet and close it",
            {BOWL: (0.42, 0.02, 0.0, 0.0)},
            ((P.IN, BOWL, BOTTOM), (P.CLOSE, BOTTOM, "")), {BOTTOM: 0.16}))
  t.append(("put the white mug on the left plate and put the yellow and white mug on the right plate",
            {PLATE_L: (0.52, -0.04, 0.0, 0.0), PLATE_R: (0.52, 0.14, 0.0, 0.0),
             WHITE_MUG: (0.38, 0.05, 0.0, 0.0), YW_MUG: (0.38, -0.12, 0.0, 0.0)},
            ((P.ON, WHITE_MUG, PLATE_L), (P.ON, YW_MUG, PLATE_R)), {}))
  t.append(("pick up the book and place it in the back compartment of the caddy",
            {CADDY: (0.60, 0.02, 0.0, 0.0), BOOK: (0.40, -0.06, 0.0, 0.0)},
            ((P.IN, BOOK, CADDY),), {}))
  t.append(("put the white mug on the plate and put the chocolate pudding to the right of the plate",
            {PLATE_L: (0.52, -0.04, 0.0, 0.0), WHITE_MUG: (0.38, 0.14, 0.0, 0.0),
             PUDDING: (0.38, -0.10, 0.0, 0.0)},
            ((P.ON, WHITE_MUG, PLATE_L), (P.IN, PUDDING, PLATE_L)), {}))
  lay, goals = _basket_two_in(SOUP, CHEESE)
  t.append(("put both the alphabet soup and the cream cheese box in the basket", lay, goals, {}))
  t.append(("put both moka pots on the stove",
            {MOKA1: (0.40, 0.02, 0.0, 0.0), MOKA2: (0.40, -0.12, 0.0, 0.0)},
            ((P.ON, MOKA1, BURNER1), (P.ON, MOKA2, BURNER2)), {}))
  t.append(("put the yellow and white mug in the microwave and close it",
            {MICRO: (0.66, 0.0, 0.0, 0.0), YW_MUG: (0.40, 0.16, 0.0, 0.0)},
            ((P.IN, YW_MUG, MICRO), (P.CLOSE, DOOR, "")), {DOOR: 1.5}))
  return t


RULES = (
    ("pad", "grip"), ("pad", "handle"), ("pad", "table"),
    ("gbase", "table"), ("pbase", "table"), ("mbase", "table"), ("bbase", "table"),
    ("mugbase", "table"), ("bookbase", "table"), ("fixture_base", "table"),
    ("gbase", "basket_floor"), ("mbase", "burner"), ("bbase", "bottom_floor"),
    ("mugbase", "plate_top"), ("mugbase", "mw_floor"), ("bookbase", "caddy_floor"),
)


def _basket():
  """The basket with two slot bodies (one per item of a two-item task). Each
  slot's IN region spans the whole basket interior (z: resting on its floor),
  centred on its own half so the expert sets the items side by side."""
  body, ent = L.basket(BASKET_N)
  slots, slot_es = [], []
  for name, y in ((SLOT1, -0.034), (SLOT2, 0.034)):
    slots.append(Body(name, (), pos=(0.0, y, 0.0)))
    slot_es.append(Entity(name, name, region=((0.0, 0.0, 0.032), (0.088, 0.102, 0.028))))
  return dataclasses.replace(body, children=tuple(slots)), ent, slot_es


def spec() -> SuiteSpec:
  table, _ = O.table()
  groceries = [O.grocery(n, role="grip gbase") for n in (SOUP, TOMATO, CHEESE, BUTTER)]
  pudding = O.grocery(PUDDING, role="grip pbase")
  mokas = [L.moka_pot(n, "mbase") for n in (MOKA1, MOKA2)]
  bowl = O.bowl(BOWL, half=0.032, height=0.03, role="bbase")
  mugs = [L.mug(WHITE_MUG, O.WHITE, "mugbase"), L.mug(YW_MUG, (0.95, 0.85, 0.3, 1), "mugbase")]
  book = L.book(BOOK, "bookbase")
  basket, basket_e, slot_es = _basket()
  caddy = L.caddy(CADDY)
  micro, micro_e, door_es, door_arts = L.microwave(MICRO)
  plates = [L.plate(PLATE_L, right_region=True), L.plate(PLATE_R)]
  stove, stove_e, stove_es, knob_arts = L.stove_with_burners(STOVE_N, (*STOVE, 0.0), "burner")
  cab, cab_e, drawer_es, drawer_arts = O.cabinet(
      "wooden_cabinet", pos=(*CABINET, 0.0), drawers=("top", "bottom"), height=0.2,
      handle_y=(0.05, -0.05), role="support")
  movable = [*groceries, pudding, *mokas, bowl, *mugs, book,
             (basket, basket_e), caddy, (micro, micro_e), *plates]
  fixture_names = {BASKET_N, CADDY, MICRO, PLATE_L, PLATE_R}
  tasks = []
  for text, layout, goals, joints in _tasks():
    noise = {k: FIXTURE_NOISE for k in layout if k in fixture_names}
    tasks.append(Task(instruction=text, layout=layout, goals=goals, noise=noise, joints=joints))
  return SuiteSpec(
      name="libero_10",
      bodies=(table, *(b for b, _ in movable), stove, cab),
      rules=RULES,
      objects=tuple(e for _, e in movable),
      fixtures=(stove_e, cab_e, *stove_es, *drawer_es, *slot_es, *door_es),
      articulations=(*knob_arts, *drawer_arts, *door_arts),
      tasks=tuple(tasks),
      max_episode_steps=520)
