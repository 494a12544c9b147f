"""LIBERO success predicates as pure functions of the privileged state.

A goal is a row of integers ``(kind, a, b)``; ``a`` and ``b`` index *entities*
(the table, the two finger pads, the suite's movable objects, then its
fixtures — see ``TabletopSuite.entities``). Predicates follow LIBERO:

  ON(a, b)      a is above b, a touches b, xy distance < ``ON_XY`` (0.03 m in
                LIBERO; measured here between a's centre and b's target point).
  IN(a, b)      a's centre lies inside b's region box (b's frame) and a is not
                held by the gripper.
  OPEN(j) / CLOSE(j)   articulated joint j past 80% / within 15% of its range
                (``a`` indexes the suite's articulated joints).
  TURNON(j)     knob joint j turned past 75% of its range.
  NONE          padding for single-stage tasks; always true.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

NONE, ON, IN, OPEN, CLOSE, TURNON = range(6)
KIND_NAMES = ("none", "on", "in", "open", "close", "turnon")
ON_XY = 0.03
TABLE, LEFT_PAD, RIGHT_PAD = 0, 1, 2  # fixed entity ids


def held(priv: dict, a: jax.Array) -> jax.Array:
  """True when both finger pads touch entity ``a`` while a is off its support."""
  touch = priv["touch"]
  return touch[LEFT_PAD, a] & touch[RIGHT_PAD, a]


def on(priv: dict, a: jax.Array, b: jax.Array, xy_tol: float = ON_XY) -> jax.Array:
  pa, pb = priv["ent_pos"][a], priv["target_pos"][b]
  close_xy = jnp.linalg.norm(pa[:2] - pb[:2]) < xy_tol
  above = pa[2] > pb[2] - 0.005
  return close_xy & above & priv["touch"][a, b] & ~held(priv, a)


def region_rel(priv: dict, a: jax.Array, b: jax.Array) -> jax.Array:
  """``a``'s origin relative to the centre of ``b``'s IN region, in ``b``'s frame."""
  return priv["ent_mat"][b].T @ (priv["ent_pos"][a] - priv["region_centre"][b])


def within_region(priv: dict, a: jax.Array, b: jax.Array) -> jax.Array:
  """``a``'s origin inside ``b``'s region box (never when ``b`` has none: negative half-extents)."""
  return jnp.all(jnp.abs(region_rel(priv, a, b)) <= priv["region_half"][b])


def inside(priv: dict, a: jax.Array, b: jax.Array) -> jax.Array:
  return within_region(priv, a, b) & ~held(priv, a)


def joint_fraction(priv: dict, j: jax.Array) -> jax.Array:
  lo, hi = priv["joint_range"][j, 0], priv["joint_range"][j, 1]
  return (priv["joint_q"][j] - lo) / (hi - lo)


def satisfied(priv: dict, goal: jax.Array) -> jax.Array:
  """Whether one goal row ``[kind, a, b]`` (int32 [3]) holds."""
  kind, a, b = goal[0], goal[1], goal[2]
  # a suite without articulated joints has no joint goals
  frac = joint_fraction(priv, a) if priv["joint_q"].shape[0] else jnp.float32(0.0)
  results = jnp.stack([
      jnp.bool_(True),
      on(priv, a, b),
      inside(priv, a, b),
      frac > 0.8,
      frac < 0.15,
      frac > 0.75,
  ])
  return results[kind]


def all_satisfied(priv: dict, goals: jax.Array) -> jax.Array:
  """Goals int32 [S, 3]: per-stage booleans [S]."""
  return jax.vmap(lambda g: satisfied(priv, g))(goals)
