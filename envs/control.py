"""LIBERO end-effector actions -> Panda joint targets by damped-least-squares IK.

Action convention (RESEARCH.md §3): a 7-vector in [-1, 1]:
  [0:3] Δposition of the tool centre point, world frame, × ``POS_SCALE`` m,
  [3:6] Δrotation as an axis-angle vector, world frame, × ``ROT_SCALE`` rad,
  [6]   gripper: -1 open, +1 closed (linear in between).

One control step (20 Hz) computes the desired TCP twist from the *measured*
state, solves ``dq = Jᵀ (J Jᵀ + λ² I)⁻¹ e`` on MJX's Jacobian at the TCP (plus a
small null-space pull toward the home posture), and sets the joint targets to
``q + dq``; the physics substeps then track that target with one of two joint laws:

- ``"servo"``: MuJoCo position actuators (kp 2000 / 800, critically damped per joint). The
  joints have different time constants (the shoulder carries the arm), so within a 50 ms step
  they follow a curved joint-space path: a pure +x command also lifts the TCP by ~1.7 cm per
  step, and a yaw command translates it. Kept for checkpoints made with it.
- ``"torque"``: computed torque (``computed_torque``): every substep, τ = M(q) (ω² (q* − q) −
  2ζω q̇) on torque motors, so each joint is the same critically damped second-order system
  and all joints converge together, along a straight joint-space line; cross-axis drift falls
  ~10× (see ``tests/test_envs.py``). Gravity is compensated by the model (``gravcomp``).
  The default since 2026-12: under the servo law, noise of std 0.1 on every arm action (what
  an imperfect policy adds) took the scripted experts from 98% to 14% on LIBERO-Spatial, under
  this law to 92% (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from mujoco import mjx

POS_SCALE = 0.05
ROT_SCALE = 0.5
FINGER_OPEN = 0.04
HOME_QPOS = (0.0, -0.161, 0.0, -2.445, 0.0, 2.227, 0.7853981633974483)
N_ARM = 7


def sanitize(action: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Replaces non-finite entries by 0 and clips to [-1, 1].

  Returns (action [7], 1.0 if any entry was non-finite else 0.0).
  """
  finite = jnp.isfinite(action)
  bad = jnp.any(~finite).astype(jnp.float32)
  return jnp.clip(jnp.where(finite, action, 0.0), -1.0, 1.0), bad


def tcp_pose(d: mjx.Data, tcp_site: int) -> tuple[jax.Array, jax.Array]:
  """World position [3] and rotation matrix [3, 3] of the tool centre point."""
  return d.site_xpos[tcp_site], d.site_xmat[tcp_site]


def joint_targets(m: mjx.Model, d: mjx.Data, action: jax.Array, tcp_site: int,
                  damping: float = 0.05,
                  nullspace_gain: float = 0.2) -> jax.Array:
  """Position-servo targets [nu] (7 arm joints, 2 fingers) for one action.

  Args:
    m, d: MJX model and data (kinematics of ``d`` must be current).
    action: sanitized action [7] in [-1, 1].
    tcp_site: site id of the TCP; joints 0..6 must be the arm's hinges.
  """
  pos, _ = tcp_pose(d, tcp_site)
  err = jnp.concatenate([action[:3] * POS_SCALE, action[3:6] * ROT_SCALE])
  # The first seven joints are the arm's hinges: their world axes and anchors
  # give the TCP Jacobian directly (cheaper than a generic body-tree pass).
  axes, anchors = d.xaxis[:N_ARM], d.xanchor[:N_ARM]
  jac = jnp.concatenate([jnp.cross(axes, pos - anchors).T, axes.T], axis=0)  # [6, 7]
  jjt = jac @ jac.T + (damping ** 2) * jnp.eye(6)
  j_pinv = jac.T @ jnp.linalg.solve(jjt, jnp.eye(6))  # [7, 6]
  q = d.qpos[:N_ARM]
  dq = j_pinv @ err
  null = jnp.eye(N_ARM) - j_pinv @ jac
  dq = dq + null @ (nullspace_gain * (jnp.asarray(HOME_QPOS) - q))
  lo, hi = m.jnt_range[:N_ARM, 0], m.jnt_range[:N_ARM, 1]
  q_target = jnp.clip(q + dq, lo, hi)
  finger = FINGER_OPEN * (1.0 - action[6]) * 0.5
  return jnp.concatenate([q_target, jnp.stack([finger, finger])])


TORQUE_BANDWIDTH = 60.0   # rad/s; ω dt = 0.6 at the 10 ms default timestep
TORQUE_DAMPING_RATIO = 1.0
CONTROL_MODES = ("servo", "torque")


def computed_torque(m: mjx.Model, d: mjx.Data, q_target: jax.Array,
                    force_limit: jax.Array) -> jax.Array:
  """Arm motor torques [7] that make every joint a critically damped system of bandwidth
  ``TORQUE_BANDWIDTH`` towards ``q_target`` [7], through the arm's mass matrix (joint
  coupling and armature included). Clipped to ``force_limit`` [7] (the motors' ranges)."""
  w, z = TORQUE_BANDWIDTH, TORQUE_DAMPING_RATIO
  acc = w * w * (q_target - d.qpos[:N_ARM]) - 2.0 * z * w * d.qvel[:N_ARM]
  # Arm joints are the first 7 dofs: M @ [acc, 0...] keeps the fingers' and objects' rows out.
  tau = mjx.mul_m(m, d, jnp.zeros(m.nv).at[:N_ARM].set(acc))[:N_ARM]
  return jnp.clip(tau, -force_limit, force_limit)


def rotvec(mat: jax.Array) -> jax.Array:
  """Axis-angle vector [3] of a rotation matrix [3, 3], angle in [0, pi].

  Through the quaternion (Shepperd's method: the best-conditioned of four formulas), then
  angle = 2 atan2(|q_xyz|, q_w). Accurate to float32 rounding at every angle; the trace +
  arccos formula loses up to ~0.2 rad within a few milliradians of a half turn, which is
  exactly where a gripper pointing straight down sits.
  """
  r = mat
  tr = r[0, 0] + r[1, 1] + r[2, 2]
  cands = jnp.stack([
      jnp.stack([1.0 + tr, r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]),
      jnp.stack([r[2, 1] - r[1, 2], 1.0 + r[0, 0] - r[1, 1] - r[2, 2], r[0, 1] + r[1, 0],
                 r[0, 2] + r[2, 0]]),
      jnp.stack([r[0, 2] - r[2, 0], r[0, 1] + r[1, 0], 1.0 + r[1, 1] - r[0, 0] - r[2, 2],
                 r[1, 2] + r[2, 1]]),
      jnp.stack([r[1, 0] - r[0, 1], r[0, 2] + r[2, 0], r[1, 2] + r[2, 1],
                 1.0 + r[2, 2] - r[0, 0] - r[1, 1]]),
  ])  # row i = 4 q_i q (w, x, y, z)
  i = jnp.argmax(jnp.stack([tr, r[0, 0], r[1, 1], r[2, 2]]))
  q = cands[i]
  q = q / jnp.linalg.norm(q)
  q = q * jnp.where(q[0] < 0, -1.0, 1.0)           # w >= 0: angle in [0, pi]
  n = jnp.linalg.norm(q[1:])
  # 2 atan2(n, w) / n, with its limit 2 / w as n -> 0
  scale = jnp.where(n > 1e-7, 2.0 * jnp.arctan2(n, q[0]) / jnp.maximum(n, 1e-7), 2.0 / q[0])
  return q[1:] * scale
