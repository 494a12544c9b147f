"""Primitive-geom objects and fixtures shared by the LIBERO-style suites.

Each builder returns ``(Body, Entity)`` (fixtures with drawers also return
their drawer entities and articulations). Movable objects have their origin at
the centre of their bottom face, so a layout's z is the height of the surface
they stand on. Only role-tagged geoms collide (see envs/scene.py).
"""
from __future__ import annotations

import math

from envs.scene import Body, Geom, Joint
from envs.tabletop import Articulation, Entity

BLACK = (0.08, 0.08, 0.09, 1.0)
WHITE = (0.92, 0.92, 0.9, 1.0)
WOOD = (0.55, 0.36, 0.2, 1.0)
DARK_WOOD = (0.4, 0.25, 0.13, 1.0)
STEEL = (0.3, 0.3, 0.32, 1.0)


def table(size: float = 1.5) -> tuple[Body, Entity]:
  body = Body("table", (Geom("plane", (size, size, 0.05), rgba=(0.78, 0.68, 0.52, 1.0),
                             role="table"),))
  return body, Entity("table", "table")


def bowl(name: str, rgba=BLACK, half: float = 0.03, height: float = 0.04,
         movable: bool = True, pos=(0.0, 0.0, 0.0), role: str | None = None) -> tuple[Body, Entity]:
  """A squat box-walled bowl. Pads close on its outer box across the object y axis.
  ``role``: roles of its floor (default: "base support", or "support" if fixed)."""
  wall = 0.004
  hz = height / 2
  geoms = (
      Geom("box", (half - 0.002, half - 0.002, wall), pos=(0, 0, wall), rgba=rgba,
           role=role or ("base support" if movable else "support")),
      Geom("box", (half, half, hz), pos=(0, 0, hz), rgba=(0, 0, 0, 0), role="grip"),
      Geom("box", (half, wall, hz), pos=(0, half - wall, hz), rgba=rgba),
      Geom("box", (half, wall, hz), pos=(0, -half + wall, hz), rgba=rgba),
      Geom("box", (wall, half, hz), pos=(half - wall, 0, hz), rgba=rgba),
      Geom("box", (wall, half, hz), pos=(-half + wall, 0, hz), rgba=rgba),
  )
  body = Body(name, geoms, pos=pos, joint=Joint("free") if movable else None,
              mass=0.15 if movable else None)
  ent = Entity(name, name, top=(0.0, 0.0, 2 * wall),
               region=((0.0, 0.0, height / 2 + 0.01), (half - wall, half - wall, height / 2 + 0.02)),
               grasp=(height * 0.6, 0.0, half, 0.0))
  return body, ent


def box_object(name: str, half: tuple[float, float, float], rgba, mass: float = 0.15,
               grip_axis: str = "y", label=None, pos=(0.0, 0.0, 0.0),
               role: str = "grip base") -> tuple[Body, Entity]:
  """A movable box-shaped item (cans, cartons, bottles). ``grip_axis``: the
  object axis the pads close along; its half-size must stay under 0.037 m.
  ``role``: contact roles of its box (a suite may give objects their own base
  role to list only the surfaces each one can reach)."""
  hx, hy, hz = half
  geoms = [Geom("box", half, pos=(0, 0, hz), rgba=rgba, role=role)]
  if label is not None:  # a coloured band, drawn only
    geoms.append(Geom("box", (hx + 0.001, hy + 0.001, hz * 0.3), pos=(0, 0, hz * 1.1), rgba=label))
  body = Body(name, tuple(geoms), pos=pos, joint=Joint("free"), mass=mass)
  across = hy if grip_axis == "y" else hx
  yaw = 0.0 if grip_axis == "y" else math.pi / 2
  grasp_z = min(hz * 1.2, 2 * hz - 0.012)
  return body, Entity(name, name, top=(0.0, 0.0, 2 * hz), grasp=(grasp_z, yaw, across, 0.0))


def plate(name: str = "plate", movable: bool = False, pos=(0.0, 0.0, 0.0),
          half: float = 0.07, role: str | None = None) -> tuple[Body, Entity]:
  roles = role or ("base support grip" if movable else "support")
  body = Body(name, (Geom("box", (half, half, 0.006), pos=(0, 0, 0.006), rgba=WHITE, role=roles),
                     Geom("box", (half * 0.7, half * 0.7, 0.0005), pos=(0, 0, 0.0125),
                          rgba=(0.85, 0.85, 0.82, 1))),
              pos=pos, joint=Joint("free") if movable else None, mass=0.3 if movable else None)
  return body, Entity(name, name, top=(0.0, 0.0, 0.012), grasp=(0.006, 0.0, half, 0.0))


def block(name: str, half, rgba, pos, role: str = "support", euler=None) -> tuple[Body, Entity]:
  """A static box standing on the table (cookie box, ramekin base, rack ...)."""
  body = Body(name, (Geom("box", half, pos=(0, 0, half[2]), rgba=rgba, role=role),), pos=pos,
              euler=euler)
  return body, Entity(name, name, top=(0.0, 0.0, 2 * half[2]))


def ramekin(name: str = "ramekin", pos=(0.0, 0.0, 0.0)) -> tuple[Body, Entity]:
  h = 0.0175
  body = Body(name, (
      Geom("box", (0.035, 0.035, h), pos=(0, 0, h), rgba=(0.93, 0.88, 0.75, 1), role="support"),
      Geom("box", (0.028, 0.028, 0.0006), pos=(0, 0, 2 * h), rgba=(0.75, 0.6, 0.4, 1))), pos=pos)
  return body, Entity(name, name, top=(0.0, 0.0, 2 * h))


def stove(name: str = "stove", pos=(0.0, 0.0, 0.0), knob: bool = False, half: float = 0.09,
          role: str = "support", front=None):
  """A flat stove; with ``knob`` a knob on a vertical hinge at its front-left
  corner whose lever (entity ``{name}_knob_handle``) is pushed round to turn
  it on (TurnOn). ``front``: (depth, half-width) of an IN region in front of
  the stove (toward the robot), for "push ... to the front of the stove".

  Returns (body, entity, extra entities, articulations)."""
  h = 0.015
  geoms = (Geom("box", (half, half, h), pos=(0, 0, h), rgba=(0.15, 0.15, 0.16, 1), role=role),
           Geom("box", (0.035, 0.035, 0.0008), pos=(0.0, 0.0, 2 * h), rgba=(0.55, 0.1, 0.08, 1)))
  children, ents, arts = (), [], []
  if knob:
    lever = Body(f"{name}_knob_handle", (
        Geom("box", (0.006, 0.012, 0.02), pos=(0, 0, 0), rgba=(0.85, 0.85, 0.85, 1),
             role="handle"),), pos=(0.0, 0.03, 0.02))
    dial = Body(f"{name}_knob", (Geom("cylinder", (0.018, 0.006), pos=(0, 0, 0.006), rgba=STEEL),),
                pos=(-half + 0.015, -half + 0.03, 2 * h), children=(lever,), mass=0.05,
                # armature: a light knob alone is too stiff a problem for the solver
                joint=Joint("hinge", axis=(0, 0, 1), range=(0.0, 1.4), damping=0.1,
                            frictionloss=0.02, armature=0.002))
    children = (dial,)
    ents.append(Entity(f"{name}_knob_handle", f"{name}_knob_handle", grasp=(0.0, 0.0, 0.006, 0.0)))
    arts.append(Articulation(f"{name}_knob", f"{name}_knob_joint", f"{name}_knob_handle", "hinge"))
  body = Body(name, geoms, pos=pos, children=children)
  region = None
  if front is not None:
    depth, width = front
    region = ((-half - depth, 0.0, 0.0), (depth * 0.7, width, 0.03))
  ent = Entity(name, name, top=(0.0, 0.0, 2 * h), region=region)
  return body, ent, ents, arts


def cabinet(name: str = "cabinet", pos=(0.0, 0.0, 0.0), drawers=("top", "bottom"),
            width: float = 0.13, depth: float = 0.1, height: float = 0.22, yaw: float = 0.0,
            handle_y=None, role: str = "support"):
  """A wooden cabinet facing -x (toward the robot) with slide-jointed drawers.

  Each drawer has a floor (roles "support {drawer}_floor"), front panel and a
  vertical handle post the pads close on; ``handle_y`` staggers the posts
  sideways so pads reaching for one clear the others. ``role``: roles of the
  top board. Returns (body, entity, drawer entities, articulations)."""
  board = 0.008
  handle_y = handle_y or (0.0,) * len(drawers)
  geoms = [
      Geom("box", (depth, width, board), pos=(0, 0, height - board), rgba=WOOD, role=role),
      Geom("box", (depth, board, height / 2), pos=(0, width - board, height / 2), rgba=WOOD),
      Geom("box", (depth, board, height / 2), pos=(0, -width + board, height / 2), rgba=WOOD),
      Geom("box", (board, width, height / 2), pos=(depth - board, 0, height / 2), rgba=WOOD),
  ]
  n = len(drawers)
  slot = (height - 2 * board) / n
  children, ents, arts = [], [], []
  for i, dname in enumerate(drawers):
    z0 = height - board - (i + 1) * slot
    dz = slot / 2 - 0.006
    full = f"{name}_{dname}_drawer"
    inner = (depth - 0.012, width - 0.014)
    dgeoms = (
        Geom("box", (inner[0], inner[1], 0.004), pos=(0, 0, 0.004), rgba=DARK_WOOD,
             role=f"support {dname}_floor"),
        Geom("box", (0.006, width - 0.01, dz), pos=(-depth + 0.006, 0, dz), rgba=WOOD),
        Geom("box", (0.004, inner[1], dz * 0.8), pos=(depth - 0.016, 0, dz * 0.8), rgba=DARK_WOOD),
        Geom("box", (inner[0], 0.004, dz * 0.8), pos=(0, inner[1], dz * 0.8), rgba=DARK_WOOD),
        Geom("box", (inner[0], 0.004, dz * 0.8), pos=(0, -inner[1], dz * 0.8), rgba=DARK_WOOD),
        Geom("box", (0.015, 0.004, 0.006), pos=(-depth - 0.012, handle_y[i], dz), rgba=STEEL),
    )
    handle = Body(f"{full}_handle", (
        Geom("box", (0.008, 0.012, 0.016), pos=(0, 0, 0), rgba=STEEL, role="handle"),),
        pos=(-depth - 0.03, handle_y[i], dz + 0.004))
    children.append(Body(full, dgeoms, pos=(0, 0, z0 + 0.002),
                         joint=Joint("slide", axis=(-1, 0, 0), range=(0.0, 0.16),
                                     damping=5.0, frictionloss=0.3),
                         children=(handle,)))
    ents.append(Entity(full, full, top=(0.0, 0.0, 0.008),
                       region=((0.0, 0.0, 0.04), (inner[0], inner[1], 0.045))))
    ents.append(Entity(f"{full}_handle", f"{full}_handle", grasp=(0.0, 0.0, 0.012, 0.0)))
    arts.append(Articulation(full, f"{full}_joint", f"{full}_handle", "slide"))
  body = Body(name, tuple(geoms), pos=pos, euler=(0.0, 0.0, yaw), children=tuple(children))
  return body, Entity(name, name, top=(0.0, 0.0, height)), ents, arts


# The ten LIBERO groceries as boxes sized like the real items (half-extents,
# colour, label band colour). Cylinders would need box-cylinder collisions,
# which MJX lacks; pads close across the smaller horizontal side.
GROCERIES = {
    "alphabet_soup": ((0.032, 0.032, 0.048), (0.8, 0.15, 0.1, 1), (0.95, 0.9, 0.8, 1)),
    "cream_cheese": ((0.036, 0.024, 0.017), (0.85, 0.9, 0.95, 1), (0.2, 0.35, 0.75, 1)),
    "salad_dressing": ((0.024, 0.024, 0.07), (0.9, 0.85, 0.55, 1), (0.2, 0.5, 0.2, 1)),
    "bbq_sauce": ((0.026, 0.026, 0.066), (0.35, 0.12, 0.06, 1), (0.95, 0.75, 0.2, 1)),
    "ketchup": ((0.03, 0.02, 0.072), (0.85, 0.08, 0.05, 1), (0.95, 0.95, 0.95, 1)),
    "tomato_sauce": ((0.03, 0.03, 0.045), (0.75, 0.12, 0.1, 1), (0.2, 0.6, 0.25, 1)),
    "butter": ((0.036, 0.02, 0.016), (0.95, 0.9, 0.5, 1), (0.2, 0.3, 0.7, 1)),
    "milk": ((0.03, 0.03, 0.068), (0.95, 0.95, 0.97, 1), (0.2, 0.45, 0.85, 1)),
    "chocolate_pudding": ((0.032, 0.024, 0.02), (0.4, 0.22, 0.1, 1), (0.9, 0.8, 0.6, 1)),
    "orange_juice": ((0.03, 0.03, 0.07), (0.98, 0.6, 0.1, 1), (0.3, 0.65, 0.2, 1)),
}


def grocery(name: str, role: str = "grip base") -> tuple[Body, Entity]:
  half, rgba, label = GROCERIES[name]
  axis = "y" if half[1] <= half[0] else "x"
  return box_object(name, half, rgba, mass=0.12, grip_axis=axis, label=label, role=role)


def basket(name: str = "basket", pos=(0.0, 0.0, 0.0), half=(0.1, 0.08), height: float = 0.07):
  """A fixed, open-topped wicker basket: a floor objects stand on (support),
  low walls (drawn), and an IN region over the floor."""
  hx, hy = half
  wall, floor = 0.006, 0.008
  tan = (0.72, 0.55, 0.32, 1.0)
  hz = height / 2
  geoms = (
      Geom("box", (hx, hy, floor / 2), pos=(0, 0, floor / 2), rgba=(0.6, 0.45, 0.25, 1),
           role="support"),
      Geom("box", (hx, wall, hz), pos=(0, hy - wall, hz), rgba=tan),
      Geom("box", (hx, wall, hz), pos=(0, -hy + wall, hz), rgba=tan),
      Geom("box", (wall, hy, hz), pos=(hx - wall, 0, hz), rgba=tan),
      Geom("box", (wall, hy, hz), pos=(-hx + wall, 0, hz), rgba=tan),
  )
  body = Body(name, geoms, pos=pos)
  region = ((0.0, 0.0, floor + 0.04), (hx - 2 * wall, hy - 2 * wall, 0.05))
  return body, Entity(name, name, top=(0.0, 0.0, floor), region=region)
