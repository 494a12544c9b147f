"""LIBERO-Goal: one shared scene, ten goals. A wooden cabinet with three
slide-jointed drawers, a stove with a knob on a hinge, a wine rack; a black
bowl, a plate, a wine bottle and a cream cheese box to move. LIBERO's
instruction strings and order; 300 steps.

Contacts are listed per object (each movable object has its own base role and
touches only the surfaces its tasks need), which keeps the scene at 30 pairs.
"""
from __future__ import annotations

import dataclasses

from envs import predicates as P
from envs.libero import objects as O
from envs.scene import Body, Geom
from envs.tabletop import Entity, SuiteSpec, Task

CABINET = (0.62, 0.3)
CAB_H = 0.21
STOVE = (0.56, -0.27)
RACK = (0.72, -0.04)
BOWL = (0.38, 0.14)
PLATE = (0.46, -0.06)
BOTTLE = (0.56, 0.1)
CHEESE = (0.34, -0.07)

BOWL_N, PLATE_N, BOTTLE_N, CHEESE_N = "akita_black_bowl", "plate", "wine_bottle", "cream_cheese"
TOP, MIDDLE = "wooden_cabinet_top_drawer", "wooden_cabinet_middle_drawer"

GOALS = (
    ("open the middle drawer of the cabinet", ((P.OPEN, MIDDLE, ""),)),
    ("put the bowl on the stove", ((P.ON, BOWL_N, "flat_stove"),)),
    ("put the wine bottle on top of the cabinet", ((P.ON, BOTTLE_N, "wooden_cabinet"),)),
    ("open the top drawer and put the bowl inside", ((P.OPEN, TOP, ""), (P.IN, BOWL_N, TOP))),
    ("put the bowl on top of the cabinet", ((P.ON, BOWL_N, "wooden_cabinet"),)),
    ("push the plate to the front of the stove", ((P.IN, PLATE_N, "flat_stove"),)),
    ("put the cream cheese in the bowl", ((P.IN, CHEESE_N, BOWL_N),)),
    ("turn on the stove", ((P.TURNON, "flat_stove_knob", ""),)),
    ("put the bowl on the plate", ((P.ON, BOWL_N, PLATE_N),)),
    ("put the wine bottle on the rack", ((P.ON, BOTTLE_N, "wine_rack"),)),
)

RULES = (
    ("pad", "grip"), ("pad", "handle"), ("pad", "table"),
    ("bowl_base", "table"), ("plate_base", "table"), ("bottle_base", "table"),
    ("cheese_base", "table"),
    ("bowl_base", "stove_top"), ("bowl_base", "cab_top"), ("bowl_base", "top_floor"),
    ("bowl_base", "plate_top"), ("bottle_base", "cab_top"), ("bottle_base", "rack_top"),
    ("cheese_base", "bowl_floor"),
)


def rack(name: str, pos) -> tuple[Body, Entity]:
  """A low wooden wine rack: a platform the bottle stands on, two rails (drawn)."""
  h = 0.03
  geoms = (Geom("box", (0.05, 0.05, h), pos=(0, 0, h), rgba=O.DARK_WOOD, role="rack_top"),
           Geom("box", (0.05, 0.005, 0.02), pos=(0, 0.045, 2 * h + 0.02), rgba=O.WOOD),
           Geom("box", (0.05, 0.005, 0.02), pos=(0, -0.045, 2 * h + 0.02), rgba=O.WOOD))
  return Body(name, geoms, pos=pos), Entity(name, name, top=(0.0, 0.0, 2 * h))


def push_plate(name: str, half: float):
  """A movable plate the pads push rather than grip (too wide). The pads meet an
  invisible collision box 2 mm wider than the plate and 20 mm tall instead of
  its 12 mm edge, on which pushing pads rode up and flipped or pinched it into
  the table. Its top stays below the pads that set a bowl down on the plate.
  It weighs 1 kg (a stoneware plate), not the 0.3 kg of the spatial suite's fixed plate: the
  pads meet it at up to 0.5 m/s, and a 0.3 kg plate tipped onto its leading edge and sprang
  off the table in a quarter of the pushes (74% -> 94% over the 50 evaluation states)."""
  body, ent = O.plate(name, movable=True, half=half, role="plate_base plate_top")
  push_box = Geom("box", (half + 0.002, half + 0.002, 0.01), pos=(0, 0, 0.01), rgba=(0, 0, 0, 0),
                  role="grip")
  return dataclasses.replace(body, geoms=(*body.geoms, push_box), mass=1.0), ent


def spec() -> SuiteSpec:
  table, _ = O.table()
  bowl, bowl_e = O.bowl(BOWL_N, half=0.032, height=0.03, role="bowl_base bowl_floor")
  plate, plate_e = push_plate(PLATE_N, half=0.06)
  bottle, bottle_e = O.box_object(BOTTLE_N, (0.024, 0.024, 0.08), (0.12, 0.3, 0.15, 1),
                                  label=(0.9, 0.85, 0.7, 1), role="grip bottle_base")
  # a standing box, tall enough that the pads holding it clear the bowl's rim
  # when it sits on the bowl's floor
  cheese, cheese_e = O.box_object(CHEESE_N, (0.026, 0.018, 0.03), (0.85, 0.9, 0.95, 1),
                                  label=(0.2, 0.35, 0.75, 1), role="grip cheese_base")
  stove, stove_e, knob_es, knob_arts = O.stove("flat_stove", pos=(*STOVE, 0.0), knob=True,
                                               role="support stove_top", front=(0.09, 0.07))
  cab, cab_e, drawer_es, drawer_arts = O.cabinet(
      "wooden_cabinet", pos=(*CABINET, 0.0), drawers=("top", "middle", "bottom"), height=CAB_H,
      handle_y=(0.075, 0.0, -0.075), role="support cab_top")
  rack_b, rack_e = rack("wine_rack", (*RACK, 0.0))
  layout = {BOWL_N: (*BOWL, 0.0, 0.0), PLATE_N: (*PLATE, 0.0, 0.0),
            BOTTLE_N: (*BOTTLE, 0.0, 0.0), CHEESE_N: (*CHEESE, 0.0, 0.0)}
  tasks = tuple(Task(instruction=text, layout=layout, goals=goals) for text, goals in GOALS)
  return SuiteSpec(
      name="libero_goal",
      bodies=(table, bowl, plate, bottle, cheese, stove, cab, rack_b),
      rules=RULES,
      objects=(bowl_e, plate_e, bottle_e, cheese_e),
      fixtures=(stove_e, cab_e, rack_e, *knob_es, *drawer_es),
      articulations=(*knob_arts, *drawer_arts),
      tasks=tasks,
      max_episode_steps=300)
