"""Primitive-geom objects of the LIBERO-10 scenes: mugs, moka pots, a book, a
caddy, a microwave with a hinged door, and a stove with two burners.

Box-only collision geometry (MJX lacks box-cylinder contacts). Fixtures that
only some tasks use (basket, caddy, microwave, plates) are heavy free bodies,
so a task's layout can place them on the table or park them off it; the pads
never touch them (they have no grip or handle roles), so the robot cannot
drag them around. ``role`` arguments name the contact roles of each part so
the suite lists only the pairs its tasks need.
"""
from __future__ import annotations

import dataclasses

from envs.libero import objects as O
from envs.scene import Body, Geom, Joint
from envs.tabletop import Articulation, Entity

FIXTURE_MASS = 3.0


def mug(name: str, rgba, base_role: str) -> tuple[Body, Entity]:
  """A box-walled cup (a tall bowl) with a drawn handle; pads close across y."""
  body, ent = O.bowl(name, rgba=rgba, half=0.03, height=0.06, role=base_role)
  handle = Geom("box", (0.006, 0.004, 0.018), pos=(0.0, 0.036, 0.032), rgba=rgba)
  return dataclasses.replace(body, geoms=(*body.geoms, handle)), ent


def moka_pot(name: str, base_role: str) -> tuple[Body, Entity]:
  """A steel box stack: a wide boiler under a narrower jug, drawn knob and spout."""
  body, ent = O.box_object(name, (0.03, 0.03, 0.05), O.STEEL, mass=0.2,
                           label=(0.15, 0.15, 0.15, 1), role=f"grip {base_role}")
  extra = (Geom("box", (0.008, 0.008, 0.006), pos=(0, 0, 0.106), rgba=(0.1, 0.1, 0.1, 1)),
           Geom("box", (0.012, 0.006, 0.006), pos=(-0.036, 0, 0.085), rgba=O.STEEL))
  return dataclasses.replace(body, geoms=(*body.geoms, *extra)), ent


def book(name: str, base_role: str) -> tuple[Body, Entity]:
  """A standing book, thin along x (pads close across its spine's thickness)."""
  return O.box_object(name, (0.014, 0.045, 0.06), (0.2, 0.3, 0.6, 1), mass=0.15,
                      grip_axis="x", label=(0.9, 0.9, 0.85, 1), role=f"grip {base_role}")


def _fixture(name, geoms, floor_top, region, children=()):
  body = Body(name, geoms, joint=Joint("free"), mass=FIXTURE_MASS, children=children)
  return body, Entity(name, name, top=(0.0, 0.0, floor_top), region=region)


def plate(name: str, right_region: bool = False) -> tuple[Body, Entity]:
  """A heavy plate (roles "fixture_base plate_top"). ``right_region``: an IN
  region 12 cm to its right as seen from the agentview camera (+y), for "put
  ... to the right of the plate"."""
  half = 0.06
  geoms = (Geom("box", (half, half, 0.006), pos=(0, 0, 0.006), rgba=O.WHITE,
                role="fixture_base plate_top"),
           Geom("box", (half * 0.7, half * 0.7, 0.0005), pos=(0, 0, 0.0125),
                rgba=(0.85, 0.85, 0.82, 1)))
  region = ((0.0, 0.12, 0.02), (0.04, 0.04, 0.03)) if right_region else None
  return _fixture(name, geoms, 0.012, region)


def caddy(name: str) -> tuple[Body, Entity]:
  """A wooden tray with a divider across x: a front and a back compartment.
  The IN region is the back (far, +x) compartment."""
  hx, hy, floor, hz = 0.09, 0.1, 0.008, 0.03
  geoms = (
      Geom("box", (hx, hy, floor / 2), pos=(0, 0, floor / 2), rgba=O.DARK_WOOD,
           role="fixture_base caddy_floor"),
      Geom("box", (0.005, hy, hz), pos=(0, 0, hz), rgba=O.WOOD),  # divider
      Geom("box", (0.005, hy, hz), pos=(hx - 0.005, 0, hz), rgba=O.WOOD),
      Geom("box", (0.005, hy, hz), pos=(-hx + 0.005, 0, hz), rgba=O.WOOD),
      Geom("box", (hx, 0.005, hz), pos=(0, hy - 0.005, hz), rgba=O.WOOD),
      Geom("box", (hx, 0.005, hz), pos=(0, -hy + 0.005, hz), rgba=O.WOOD),
  )
  region = ((hx / 2, 0.0, floor + 0.05), (hx / 2 - 0.012, hy - 0.012, 0.06))
  return _fixture(name, geoms, floor, region)


def basket(name: str) -> tuple[Body, Entity]:
  """objects.basket as a heavy free body (floor roles "fixture_base basket_floor")."""
  body, ent = O.basket(name)
  floor = dataclasses.replace(body.geoms[0], role="fixture_base basket_floor")
  body = dataclasses.replace(body, geoms=(floor, *body.geoms[1:]), joint=Joint("free"),
                             mass=FIXTURE_MASS)
  return body, ent


def microwave(name: str, open_q: float = 1.5):
  """An open-topped microwave facing -x (the robot): a floor the mug stands on
  (roles "fixture_base mw_floor"), drawn walls, and a door on a vertical hinge
  at its front -y corner that swings out toward the robot (q > 0 opens it). The
  door is closed by pushing its handle round with the closed gripper.

  Returns (body, entity, [door handle entity], [door articulation])."""
  hx, hy, h, floor = 0.09, 0.11, 0.13, 0.01
  grey = (0.82, 0.82, 0.84, 1)
  geoms = (
      Geom("box", (hx, hy, floor / 2), pos=(0, 0, floor / 2), rgba=(0.25, 0.25, 0.27, 1),
           role="fixture_base mw_floor"),
      Geom("box", (0.005, hy, h / 2), pos=(hx - 0.005, 0, h / 2), rgba=grey),
      Geom("box", (hx, 0.005, h / 2), pos=(0, hy - 0.005, h / 2), rgba=grey),
      Geom("box", (hx, 0.005, h / 2), pos=(0, -hy + 0.005, h / 2), rgba=grey),
  )
  handle = Body(f"{name}_door_handle", (
      Geom("box", (0.006, 0.01, 0.025), pos=(0, 0, 0), rgba=O.STEEL, role="handle"),),
      pos=(-0.02, 2 * hy - 0.03, h / 2))
  door = Body(f"{name}_door", (
      Geom("box", (0.004, hy, h / 2 - 0.005), pos=(0, hy, h / 2), rgba=(0.1, 0.1, 0.12, 1)),),
      pos=(-hx - 0.006, -hy, 0.0), children=(handle,), mass=0.1,
      joint=Joint("hinge", axis=(0, 0, 1), range=(0.0, open_q + 0.1), damping=0.2,
                  frictionloss=0.02, armature=0.002))
  body, ent = _fixture(name, geoms, floor,
                       ((0.0, 0.0, floor + 0.05), (hx - 0.02, hy - 0.02, 0.06)), children=(door,))
  h_ent = Entity(f"{name}_door_handle", f"{name}_door_handle", grasp=(0.0, 0.0, 0.006, 0.0))
  art = Articulation(f"{name}_door", f"{name}_door_joint", f"{name}_door_handle", "hinge")
  return body, ent, [h_ent], [art]


def stove_with_burners(name: str, pos, role: str):
  """objects.stove (with its knob) plus two burner bodies on top at y = -/+ 5 cm,
  each its own entity (roles ``role``) a pot can be put on.

  Returns (body, stove entity, extra entities, articulations)."""
  body, ent, knob_es, arts = O.stove(name, pos=pos, knob=True, half=0.1, role="support")
  burners, b_ents = [], []
  for i, y in enumerate((-0.05, 0.05)):
    bname = f"{name}_burner_{i + 1}"
    burners.append(Body(bname, (Geom("box", (0.035, 0.035, 0.001), pos=(0, 0, 0.001),
                                     rgba=(0.55, 0.1, 0.08, 1), role=role),),
                        pos=(0.01, y, 0.03)))
    b_ents.append(Entity(bname, bname, top=(0.0, 0.0, 0.002)))
  body = dataclasses.replace(body, geoms=body.geoms[:1], children=(*body.children, *burners))
  return body, ent, [*knob_es, *b_ents], arts
