"""Scripted privileged experts: feedback policies of the current state.

No clock and no memory: the phase (approach, grasp, lift, move, place,
release, pull, push) is read off the privileged state each step — where the
object is, whether both finger pads touch it, how far the fingers are closed —
so the expert is a valid teacher in any state a student drives the scene into.

One expert serves every task: a task's goals are ``(kind, a, b)`` rows
(envs/predicates.py); the expert works on the first unsatisfied one with the
skill its kind calls for:
  ON / IN   pick ``a`` and place it on / in ``b`` (or push it there when ``a``
            is too wide for the gripper);
  OPEN / CLOSE / TURNON   grasp the articulation's handle and drive the joint.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from envs import control
from envs import predicates as P

# Home orientation of the TCP: x forward, pointing down.
R_DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]], np.float32)
HOVER = 0.10  # m above a grasp point before descending
CLEAR_Z = 0.16  # m: TCP height to travel at between objects when starting low
CARRY_Z = 0.26  # m: lowest carry height of a held object's origin
MAX_OPEN = 2 * control.FINGER_OPEN
LIFT_STEP = 0.015  # m: highest TCP target above its position while the held object still rests


def _rz(yaw):
  c, s = jnp.cos(yaw), jnp.sin(yaw)
  return jnp.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_err(r_des, r_cur):
  """World-frame axis-angle taking r_cur to r_des."""
  return control.rotvec(r_des @ r_cur.T)


def _wrap_half_pi(yaw):
  """Grasps are symmetric under a half turn: map yaw to [-pi/2, pi/2)."""
  return (yaw + jnp.pi / 2) % jnp.pi - jnp.pi / 2


GAIN = 0.7  # < 1: the servos lag the IK target; full gain overshoots


def _action(priv, tgt_pos, yaw, grip):
  """Proportional move of the TCP toward ``tgt_pos`` with gripper yaw ``yaw``."""
  dp = GAIN * (tgt_pos - priv["tcp_pos"]) / control.POS_SCALE
  dr = _rot_err(_rz(yaw) @ R_DOWN, priv["tcp_mat"]) / control.ROT_SCALE
  return jnp.concatenate([jnp.clip(dp, -1, 1), jnp.clip(dr, -1, 1), jnp.array([grip])])


def _grasp_yaw(priv, a):
  m = priv["ent_mat"][a]
  return _wrap_half_pi(jnp.arctan2(m[1, 0], m[0, 0]) + priv["ent_grasp"][a, 1])


def _tcp_yaw(priv):
  m = priv["tcp_mat"] @ R_DOWN.T
  return jnp.arctan2(m[1, 0], m[0, 0])


def _grasp_point(priv, a):
  """``a``'s grasp point, in its own frame: still on the object when it has tipped over."""
  return priv["ent_pos"][a] + priv["ent_mat"][a] @ jnp.array([0.0, 0.0, priv["ent_grasp"][a, 0]])


def approach_and_grasp(priv, a):
  """Not holding ``a``: open, rise, hover above its grasp point, descend, close."""
  p = priv["tcp_pos"]
  g = _grasp_point(priv, a)
  yaw = _grasp_yaw(priv, a)
  opening = priv["fingers"].sum()
  xy_err = jnp.linalg.norm(g[:2] - p[:2])
  yaw_err = jnp.abs(_wrap_half_pi(yaw - _tcp_yaw(priv)))
  # Tight alignment to start descending, looser once on the way down (the
  # height tells which: no memory needed).
  descending = p[2] < g[2] + HOVER - 0.02
  aligned = (xy_err < jnp.where(descending, 0.022, 0.012)) & (yaw_err < 0.12)
  # far from it and low (e.g. just after setting another object down, the
  # pads still straddling it): rise to a clearance height before travelling,
  # or the pads sweep what was just placed off its target
  far = xy_err > 0.04
  low = (p[2] < g[2] + 0.06) | (far & (p[2] < CLEAR_Z - 0.03))
  hover = g.at[2].set(jnp.maximum(g[2] + HOVER, jnp.where(far, CLEAR_Z, 0.0)))
  up = p.at[2].set(jnp.maximum(p[2], hover[2]))
  down = g.at[2].set(jnp.maximum(g[2], p[2] - 0.03))  # descend at <= 3 cm a step
  tgt = jnp.where(aligned, down, jnp.where(low, up, hover))
  tgt = jnp.where(~aligned & (opening < MAX_OPEN - 0.01), p, tgt)  # open before moving
  at_bottom = aligned & (p[2] - g[2] < 0.012)  # also when it slipped a little in the grip
  # closed on nothing (the thinnest grip, a knob lever, leaves 12 mm): open, retry
  empty = opening < 0.008
  closing = at_bottom & ~empty
  grip = jnp.where(closing, 1.0, -1.0)
  # hold still while the pads close: descending on, the closing pads dragged the object down
  # by friction, and the stiff computed-torque arm pressed a bowl through a drawer's floor
  tgt = jnp.where(closing, p, tgt)
  return _action(priv, tgt, yaw, grip)


def _place_point(priv, a, b, kind):
  bottom = priv["ent_grasp"][a, 3]
  on_pt = priv["target_pos"][b]
  in_pt = priv["region_centre"][b] - jnp.array([0.0, 0.0, priv["region_half"][b, 2]])
  pt = jnp.where(kind == P.IN, in_pt, on_pt)
  return pt + jnp.array([0.0, 0.0, bottom + 0.012])


def pick_place(priv, a, b, kind):
  """Move ``a`` so its bottom rests on ``b``'s target point (ON) or in ``b``'s region (IN)."""
  p, o = priv["tcp_pos"], priv["ent_pos"][a]
  t = _place_point(priv, a, b, kind)
  dz = p[2] - o[2]  # TCP height above the object's origin while held
  # steer by the held point (below the TCP even when a tall object tilts in
  # the grip), aiming it at where it sits above the target's point
  held_pt = o + priv["ent_mat"][a] @ jnp.array([0.0, 0.0, priv["ent_grasp"][a, 0]])
  xy = t[:2] - held_pt[:2]
  # carry height of the object's origin: above the target and above every
  # fixture top it may pass (the tallest, a cabinet, is 0.22 m)
  travel = jnp.maximum(t[2] + 0.07, CARRY_Z)
  # still touching what it stood on (anything but the pads): lift straight up first
  others = priv["touch"][a].at[P.LEFT_PAD].set(False).at[P.RIGHT_PAD].set(False)
  resting = jnp.any(others)
  low = o[2] < travel - 0.03
  # once lowered below the travel height, only a clear miss sends it back up
  far = jnp.linalg.norm(xy) > jnp.where(low, 0.02, 0.012)
  carry_z = travel + dz  # back down to the travel height if it overshot (servo lag, drift)
  rise = jnp.maximum(travel, o[2] + 0.05) + dz
  # off its support gently (<= LIFT_STEP a step): a full-speed yank of the stiff torque-law arm
  # twisted a just-gripped bowl out of the pads
  rise = jnp.where(resting, jnp.minimum(rise, p[2] + LIFT_STEP), rise)
  carry = jnp.where(low | resting, p.at[2].set(rise),
                    jnp.concatenate([p[:2] + xy, carry_z[None]]))
  # descend at <= 3 cm a step: faster descents drag the TCP sideways (servo lag)
  lower = jnp.concatenate([p[:2] + xy, jnp.maximum(t[2] + dz, p[2] - 0.03)[None]])
  tgt = jnp.where(far, carry, lower)
  under, slide = _under_region(priv, a, b, kind)
  tgt = jnp.where(under, slide, tgt)
  # Let go at the place point, or (IN) once it rests on something inside the region: a thin
  # box a pad tipped on its side during the grasp is carried sideways and never reaches the
  # upright place point's height, and was held over the basket floor for the rest of the
  # episode.
  at_point = (jnp.linalg.norm(xy) < 0.01) & (o[2] - t[2] < 0.01)
  rests_inside = (kind == P.IN) & P.within_region(priv, a, b) & resting
  release = (at_point | rests_inside) & ~under
  held_act = _action(priv, tgt, _tcp_yaw(priv), jnp.where(release, -1.0, 1.0))
  # Just let go and still settling at the place point (a bowl bounces on a plate): keep
  # opening and rise; closing on it again mid-bounce pressed it and the plate into the table
  # and threw it off.
  settling = (jnp.linalg.norm(xy) < 0.02) & (o[2] - t[2] < 0.03) & (priv["ent_mat"][a][2, 2] > 0.9)
  free_act = jnp.where(settling, retreat(priv), approach_and_grasp(priv, a))
  return jnp.where(_holding(priv, a), held_act, free_act)


UNDER_MARGIN = 0.05  # m beyond an overhanging region's footprint: the held object's and pads' reach
UNDER_GAP = 0.04  # m: a region bottom this far above the object's origin overhangs it


def _under_region(priv, a, b, kind):
  """(under, target): held ``a`` sits below an IN target region that overhangs it (an open
  drawer's floor at 0.14 m above a bowl on the table beside the cabinet), and the TCP target
  that slides it out from under the region's footprint, by the shortest way, before it rises.
  Lifting straight up, the bowl's rim caught the drawer floor from below, twisted out of the
  pads and landed upside down (goal task 3, 3 of its 50 evaluation states)."""
  p = priv["tcp_pos"]
  half = priv["region_half"][b]
  rel = P.region_rel(priv, a, b)
  gap = -half[2] - rel[2]  # region bottom above the object's origin
  need = half[:2] + UNDER_MARGIN - jnp.abs(rel[:2])  # > 0 on both axes: inside the footprint
  under = (kind == P.IN) & (half[0] > 0) & jnp.all(need > 0) & (gap > UNDER_GAP)
  axis = jnp.argmin(need)
  side = jnp.where(rel[:2] >= 0, 1.0, -1.0)  # (never 0: dead centre still leaves)
  step = jnp.where(jnp.arange(2) == axis, side * (need + 0.01), 0.0)
  out = priv["ent_mat"][b] @ jnp.concatenate([step, jnp.zeros(1)])
  # off the table a little while sliding, staying well below the region's bottom
  lift = jnp.clip(gap - 2 * UNDER_GAP, 0.0, LIFT_STEP)
  return under, (p + out).at[2].add(lift)


def _holding(priv, a):
  """Held (both pads touch ``a``), or a one-pad flicker of contact while the
  fingers are closed on it at its grasp point: keep the grip."""
  touch = priv["touch"]
  one = touch[P.LEFT_PAD, a] | touch[P.RIGHT_PAD, a]
  g = _grasp_point(priv, a)
  near = jnp.linalg.norm(priv["tcp_pos"] - g) < 0.02
  closed_on = priv["fingers"].sum() < 2 * priv["ent_grasp"][a, 2] + 0.004
  return P.held(priv, a) | (one & near & closed_on)


def push(priv, a, b):
  """Push a wide, flat object ``a`` (closed gripper, low) to the centre of ``b``'s region."""
  p, o = priv["tcp_pos"], priv["ent_pos"][a]
  t = priv["region_centre"][b]
  d = t[:2] - o[:2]
  dist = jnp.linalg.norm(d)
  dirn = d / jnp.maximum(dist, 1e-6)
  perp = jnp.array([-dirn[1], dirn[0]])
  # half-extent of a's square footprint along the push direction
  local = priv["ent_mat"][a][:2, :2].T @ dirn
  radius = priv["ent_grasp"][a, 2] * (jnp.abs(local[0]) + jnp.abs(local[1]))
  rel = p[:2] - o[:2]
  along, lateral = rel @ dirn, rel @ perp
  z_push = jnp.maximum(o[2], 0.0) + 0.008  # pads 1 mm above the table: push the edge, not over it
  pre = o[:2] - dirn * (radius + 0.03)
  ready = (along < -radius + 0.008) & (jnp.abs(lateral) < 0.025) & (p[2] < z_push + 0.02)
  go = jnp.concatenate([p[:2] + dirn * jnp.minimum(0.04, dist) - lateral * perp, z_push[None]])
  near_pre = jnp.linalg.norm(p[:2] - pre) < 0.015
  hover = jnp.concatenate([pre, (z_push + 0.08)[None]])
  up = p.at[2].set(z_push + 0.08)
  descend = jnp.concatenate([pre, z_push[None]])
  tgt = jnp.where(ready, go, jnp.where(near_pre, descend, jnp.where(p[2] < z_push + 0.05, up, hover)))
  tgt = jnp.where(dist < 0.015, up, tgt)  # there: lift off so it counts as not held
  return _action(priv, tgt, _tcp_yaw(priv), 1.0)


def turn(priv, j, frac_goal):
  """Turn hinge ``j`` (a knob lever, a door) toward ``frac_goal`` of its range by
  pushing its handle sideways with the closed gripper, following the arc."""
  h = priv["art_handle"][j]
  lo, hi = priv["joint_range"][j, 0], priv["joint_range"][j, 1]
  sgn = jnp.where(lo + frac_goal * (hi - lo) > priv["joint_q"][j], 1.0, -1.0)
  hp, axis, anchor = priv["ent_pos"][h], priv["joint_axis"][j], priv["joint_anchor"][j]
  r = hp - anchor
  r = r - axis * (axis @ r)
  rn = r / jnp.maximum(jnp.linalg.norm(r), 1e-6)
  tang = jnp.cross(axis, rn) * sgn  # direction the handle must move
  off = priv["ent_grasp"][h, 2] + 0.016  # handle half-thickness + closed pads + gap
  p = priv["tcp_pos"]
  rel = p - hp
  along, radial, dz = rel @ tang, rel @ rn, rel[2]
  ready = (along > -off - 0.025) & (along < -off + 0.012) & (jnp.abs(radial) < 0.015) & \
      (jnp.abs(dz) < 0.015)
  go = p + tang * 0.03 - rn * radial - jnp.array([0.0, 0.0, 1.0]) * dz
  contact = hp - tang * off
  aligned = jnp.linalg.norm(p[:2] - contact[:2]) < 0.012
  low = p[2] < hp[2] + 0.05
  hover = contact.at[2].add(0.08)
  descend = contact.at[2].set(jnp.maximum(hp[2], p[2] - 0.03))
  up = p.at[2].set(hp[2] + 0.08)
  tgt = jnp.where(ready, go, jnp.where(aligned, descend, jnp.where(low, up, hover)))
  return _action(priv, tgt, _tcp_yaw(priv), 1.0)


def articulate(priv, j, frac_goal):
  """Grasp articulation ``j``'s handle and drive the joint toward ``frac_goal`` of its range."""
  h = priv["art_handle"][j]
  lo, hi = priv["joint_range"][j, 0], priv["joint_range"][j, 1]
  q = priv["joint_q"][j]
  q_goal = lo + frac_goal * (hi - lo)
  is_hinge = priv["art_is_hinge"][j]
  dq = jnp.clip(q_goal - q, -jnp.where(is_hinge, 0.25, 0.03), jnp.where(is_hinge, 0.25, 0.03))
  hp, axis, anchor = priv["ent_pos"][h], priv["joint_axis"][j], priv["joint_anchor"][j]
  # where the handle should be after moving the joint by dq
  slide_to = hp + axis * dq
  r = hp - anchor
  c, s = jnp.cos(dq), jnp.sin(dq)
  hinge_to = anchor + r * c + jnp.cross(axis, r) * s + axis * (axis @ r) * (1 - c)
  move = jnp.where(is_hinge, hinge_to, slide_to) - hp
  done = jnp.abs(q_goal - q) < 0.02 * (hi - lo)
  held_act = _action(priv, priv["tcp_pos"] + move, _tcp_yaw(priv), jnp.where(done, -1.0, 1.0))
  return jnp.where(P.held(priv, h), held_act, approach_and_grasp(priv, h))


def retreat(priv):
  """Open fully, then rise (rising while the pads still press on an object can lift it)."""
  p = priv["tcp_pos"]
  opened = priv["fingers"].sum() > MAX_OPEN - 0.01
  up = p.at[2].set(jnp.where(opened, jnp.minimum(p[2] + 0.05, 0.35), p[2]))
  return _action(priv, up, _tcp_yaw(priv), -1.0)


def _stage_object(priv, kind, a):
  """What the stage's skill acts on: the handle of articulation ``a`` (OPEN / CLOSE / TURNON),
  else entity ``a``."""
  if not priv["joint_q"].shape[0]:  # a suite without articulated joints
    return a
  return jnp.where(kind >= P.OPEN, priv["art_handle"][a], a)


def act(priv: dict, goals: jax.Array, stages: jax.Array) -> jax.Array:
  """Expert action [7] for goals int32 [S, 3] with per-stage satisfaction [S]."""
  s = jnp.argmin(stages)  # first unsatisfied stage (0 if all hold)
  kind, a, b = goals[s, 0], goals[s, 1], goals[s, 2]
  too_wide = priv["ent_grasp"][a, 2] > 0.037
  place = jnp.where((kind == P.IN) & too_wide, push(priv, a, b), pick_place(priv, a, b, kind))
  frac = jnp.where(kind == P.CLOSE, 0.0, 1.0)
  if priv["joint_q"].shape[0]:
    art = jnp.where(priv["art_is_hinge"][a], turn(priv, a, frac), articulate(priv, a, frac))
    action = jnp.where(kind <= P.IN, place, art)
  else:  # a suite without articulated joints
    action = place
  # The pads still on a movable object the current stage is not about (the one just placed,
  # when the next stage starts): let go of it and rise first, or the next skill (which may
  # close the gripper to push a handle) picks it up again.
  obj = _stage_object(priv, kind, a)
  pads = priv["touch"][P.LEFT_PAD] | priv["touch"][P.RIGHT_PAD]
  stray = jnp.any(pads & priv["ent_movable"] & (jnp.arange(pads.shape[0]) != obj))
  stray = stray & ~_holding(priv, obj)
  if priv["joint_q"].shape[0]:
    # Likewise the pads still at a handle the stage is not about (the drawer just opened):
    # rise clear of it first. Leaving sideways at handle height swept the open pads across
    # it and knocked the drawer shut again.
    hp = priv["ent_pos"][priv["art_handle"]]
    near = jnp.linalg.norm(hp - priv["tcp_pos"], axis=-1) < 0.04
    stray = stray | jnp.any(near & (priv["art_handle"] != obj))
  return jnp.where(jnp.all(stages) | stray, retreat(priv), action)


def dense_reward(priv: dict, goals: jax.Array, stages: jax.Array) -> jax.Array:
  """Shaping in [0, 1] for RL baselines: finished stages plus progress on the current one
  (reach the object / handle, hold it, bring it to the goal)."""
  s = jnp.argmin(stages)
  kind, a, b = goals[s, 0], goals[s, 1], goals[s, 2]
  obj = _stage_object(priv, kind, a)
  reach = 1.0 - jnp.tanh(5.0 * jnp.linalg.norm(priv["tcp_pos"] - priv["ent_pos"][obj]))
  hold = P.held(priv, obj).astype(jnp.float32)
  place_err = jnp.linalg.norm(_place_point(priv, a, b, kind) - priv["ent_pos"][a])
  frac = P.joint_fraction(priv, a) if priv["joint_q"].shape[0] else 0.0
  art_prog = jnp.where(kind == P.CLOSE, 1.0 - frac, frac)
  progress = jnp.where(kind >= P.OPEN, art_prog, 1.0 - jnp.tanh(5.0 * place_err))
  partial = 0.25 * reach + 0.25 * hold + 0.5 * progress
  n = jnp.maximum(jnp.sum(goals[:, 0] != P.NONE), 1)
  done_stages = jnp.sum(stages & (goals[:, 0] != P.NONE))
  value = (done_stages + jnp.where(jnp.all(stages), 0.0, partial)) / n
  return value.astype(jnp.float32)
