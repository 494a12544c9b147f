"""MJCF scene builder: the Panda plus bodies described in Python, with explicit contacts.

Scenes are written as small Python descriptions (``Body`` / ``Geom``) and turned
into one MJCF string by :func:`build`. Every geom carries a *role*; the suite
lists which role pairs may touch (``rules``), and only those pairs become
``<pair>`` elements. All geoms have ``contype = conaffinity = 0``, so MJX's
contact cost is exactly the listed pairs — the main lever on physics speed.

Roles used by the suites:
  visual   drawn only (group 1), never collides
  table    the table top (a plane)
  pad      the two finger pads (from the robot file)
  hand     the hand's palm box (from the robot file)
  base     the underside of a movable object (what it stands on)
  grip     the part of a movable object the pads close on
  support  a surface that objects stand on (fixture tops, drawer floors, plates)
  handle   drawer handles, knob levers: what the gripper pulls or pushes
  wall     obstacles that keep objects out (drawer / basket walls)
"""
from __future__ import annotations

import dataclasses
import math
import os
import xml.etree.ElementTree as ET
from typing import Sequence

ROBOT_XML = os.path.join(os.path.dirname(__file__), "robots", "panda.xml")
ROBOT_ROLES = {"left_pad": "pad", "right_pad": "pad", "panda_hand_geom": "hand"}
ROBOT_FRICTION = {"left_pad": 2.0, "right_pad": 2.0}

# Stiff contacts (impedance up to 0.99) keep light objects from sinking into the
# pads under grip force at a 10 ms timestep. <pair> does not inherit geom solimp.
PAIR_SOLIMP = "0.95 0.99 0.001"
# 8 Newton iterations: 4 left the solver unconverged under stiff pushes, and the goal suite's
# plate sprang off the table and flipped in a fifth of the pushes (tests/test_suites.py::
# test_goal_push_solver_converges). MJX stops iterating once converged, so 8 cost nothing
# measurable (benchmarks/envs.py --iterations 4,8).
DEFAULT_OPTION = dict(timestep="0.01", iterations="8", ls_iterations="6",
                      integrator="implicitfast", cone="pyramidal",
                      impratio="1")


@dataclasses.dataclass(frozen=True)
class Geom:
  """One primitive. ``size`` follows MJCF (box: half-extents)."""
  type: str
  size: tuple[float, ...]
  pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
  euler: tuple[float, float, float] | None = None
  rgba: tuple[float, float, float, float] = (0.6, 0.6, 0.6, 1.0)
  role: str = "visual"  # one or more roles separated by spaces, e.g. "grip base"
  friction: tuple[float, float, float] | None = None
  name: str | None = None


@dataclasses.dataclass(frozen=True)
class Joint:
  type: str  # "free", "slide" or "hinge"
  axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
  range: tuple[float, float] | None = None
  damping: float = 0.0
  frictionloss: float = 0.0
  armature: float = 0.0


@dataclasses.dataclass(frozen=True)
class Body:
  name: str
  geoms: tuple[Geom, ...]
  pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
  euler: tuple[float, float, float] | None = None
  joint: Joint | None = None
  mass: float | None = None
  children: tuple["Body", ...] = ()
  sites: tuple[tuple[str, tuple[float, float, float]], ...] = ()


def _fmt(v: Sequence[float]) -> str:
  return " ".join(f"{x:.6g}" for x in v)


def _extent(g: Geom) -> tuple[float, float, float]:
  """Half-extents of an axis-aligned box bounding the geom (ignoring euler)."""
  s = g.size
  if g.type == "box":
    return (s[0], s[1], s[2])
  if g.type == "sphere":
    return (s[0],) * 3
  if g.type in ("cylinder", "capsule"):
    return (s[0], s[0], s[1] + (s[0] if g.type == "capsule" else 0.0))
  if g.type == "ellipsoid":
    return (s[0], s[1], s[2])
  return (0.05, 0.05, 0.05)


def _inertial(body: Body) -> ET.Element:
  """A box-shaped inertia of the body's mass over its geoms' bounding box."""
  lo = [math.inf] * 3
  hi = [-math.inf] * 3
  for g in body.geoms:
    e = _extent(g)
    for i in range(3):
      lo[i] = min(lo[i], g.pos[i] - e[i])
      hi[i] = max(hi[i], g.pos[i] + e[i])
  dims = [max(h - l, 0.01) for l, h in zip(lo, hi)]
  centre = [(l + h) / 2 for l, h in zip(lo, hi)]
  m = body.mass
  inertia = [m / 12 * (dims[1] ** 2 + dims[2] ** 2), m / 12 * (dims[0] ** 2 + dims[2] ** 2),
             m / 12 * (dims[0] ** 2 + dims[1] ** 2)]
  return ET.Element("inertial", pos=_fmt(centre), mass=f"{m:.6g}", diaginertia=_fmt(inertia))


def _body_element(body: Body, roles: dict[str, list[str]],
                  friction: dict[str, float]) -> ET.Element:
  attrs = {"name": body.name, "pos": _fmt(body.pos)}
  if body.euler is not None:
    attrs["euler"] = _fmt(body.euler)
  el = ET.Element("body", attrs)
  if body.mass is not None:
    el.append(_inertial(body))
  if body.joint is not None:
    j = body.joint
    if j.type == "free":
      el.append(ET.Element("freejoint", name=f"{body.name}_joint"))
    else:
      jattrs = {"name": f"{body.name}_joint", "type": j.type, "axis": _fmt(j.axis),
                "damping": f"{j.damping:.6g}", "frictionloss": f"{j.frictionloss:.6g}",
                "armature": f"{j.armature:.6g}"}
      if j.range is not None:
        jattrs["range"] = _fmt(j.range)
      el.append(ET.Element("joint", jattrs))
  for i, g in enumerate(body.geoms):
    name = g.name or f"{body.name}_{g.role}{i}"
    gattrs = {"name": name, "type": g.type, "size": _fmt(g.size), "pos": _fmt(g.pos),
              "rgba": _fmt(g.rgba), "contype": "0", "conaffinity": "0",
              "group": "1" if g.role == "visual" else "0"}
    if g.euler is not None:
      gattrs["euler"] = _fmt(g.euler)
    if g.friction is not None:
      gattrs["friction"] = _fmt(g.friction)
    if body.mass is not None or body.joint is None:
      gattrs["mass"] = "0"
    el.append(ET.Element("geom", gattrs))
    for role in g.role.split():
      roles.setdefault(role, []).append(name)
    friction[name] = g.friction[0] if g.friction is not None else 1.0
  for sname, spos in body.sites:
    el.append(ET.Element("site", name=sname, pos=_fmt(spos), size="0.005", group="3"))
  for child in body.children:
    el.append(_body_element(child, roles, friction))
  return el


def build(bodies: Sequence[Body], rules: Sequence[tuple[str, str]], *,
          cameras: Sequence[dict[str, str]] = (), option: dict[str, str] | None = None,
          model_name: str = "scene", arm_motors: bool = False) -> tuple[str, int]:
  """Returns (MJCF text, number of contact pairs) for the robot plus ``bodies``.

  ``arm_motors``: the seven arm joints get torque motors (ctrl = N m, within the joint's force
  range) instead of position servos, for ``envs.control.computed_torque``. The fingers keep
  their position servos either way.

  ``rules``: role pairs that may touch, e.g. ``[("pad", "grip"), ("base", "table")]``.
  Pairs between geoms of the same top-level body are never generated.
  """
  robot = ET.parse(ROBOT_XML).getroot()
  root = ET.Element("mujoco", model=model_name)
  root.append(ET.Element("compiler", angle="radian", autolimits="true"))
  opt = ET.SubElement(root, "option", {**DEFAULT_OPTION, **(option or {})})
  ET.SubElement(opt, "flag", eulerdamp="disable")
  root.append(robot.find("default"))
  visual = ET.SubElement(root, "visual")
  ET.SubElement(visual, "headlight", ambient="0.12 0.12 0.12", diffuse="0.25 0.25 0.25")
  asset = ET.SubElement(root, "asset")
  ET.SubElement(asset, "material", name="default_material", rgba="1 1 1 1")
  world = ET.SubElement(root, "worldbody")
  ET.SubElement(world, "light", name="sun", pos="0.3 -0.4 2.5", dir="-0.15 0.2 -1",
                directional="true", diffuse="0.55 0.55 0.55", ambient="0.12 0.12 0.12",
                castshadow="true")
  for cam in cameras:
    world.append(ET.Element("camera", cam))
  roles: dict[str, list[str]] = {}
  owner: dict[str, str] = {}
  friction = dict(ROBOT_FRICTION)
  for g_name, role in ROBOT_ROLES.items():
    roles.setdefault(role, []).append(g_name)
    owner[g_name] = "panda"
  for body_el in robot.find("worldbody"):
    world.append(body_el)
  for body in bodies:
    before = {n for names in roles.values() for n in names}
    world.append(_body_element(body, roles, friction))
    for names in roles.values():
      for n in names:
        if n not in before:
          owner[n] = body.name
  contact = ET.SubElement(root, "contact")
  n_pairs = 0
  seen = set()
  for ra, rb in rules:
    for a in roles.get(ra, []):
      for b in roles.get(rb, []):
        key = tuple(sorted((a, b)))
        if a == b or owner[a] == owner[b] or key in seen:
          continue
        seen.add(key)
        mu = max(friction.get(a, 1.0), friction.get(b, 1.0))
        # <pair> does not inherit geom friction: set it from the geoms.
        ET.SubElement(contact, "pair", geom1=a, geom2=b, condim="3",
                      friction=f"{mu:.4g} {mu:.4g} 0.005 0.0001 0.0001",
                      solimp=PAIR_SOLIMP)
        n_pairs += 1
  actuators = robot.find("actuator")
  if arm_motors:
    actuators = _arm_motors(actuators, robot.find("default"))
  root.append(actuators)
  ET.indent(root)
  return ET.tostring(root, encoding="unicode"), n_pairs


def _arm_motors(actuators: ET.Element, defaults: ET.Element) -> ET.Element:
  """The robot's <actuator> block with each arm position servo turned into a torque motor
  whose control range is the servo's force range (from its default class)."""
  force = {}
  for cls in defaults.iter("default"):
    pos = cls.find("position")
    if pos is not None and pos.get("forcerange"):
      force[cls.get("class")] = pos.get("forcerange")
  out = ET.Element("actuator")
  for a in actuators:
    cls = a.get("class")
    if a.tag == "position" and cls in force and "finger" not in cls:
      lim = force[cls]
      out.append(ET.Element("motor", {"name": a.get("name"), "joint": a.get("joint"),
                                      "ctrlrange": lim, "forcerange": lim}))
    else:
      out.append(a)
  return out
