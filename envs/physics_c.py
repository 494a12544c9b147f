"""MuJoCo's C engine as the suite's physics, called from inside jitted code (``physics="c"``).

On a CPU host MJX is slow to compile (~15-20 s for a suite's step) and to run (~1k control
steps/s); the same MJCF stepped by MuJoCo C is ~30x faster. :class:`CPhysics` runs a control
step's ``substeps`` physics steps, with the suite's arm law between them, in C through
``jax.pure_callback``, so everything above the physics (IK, tasks, experts, predicates, the
renderer, observations) stays the JAX code that MJX mode runs, inside the same jitted programs.
Measured (benchmarks/physics_backends.py, libero_spatial, loaded 2-core CPU): 9-13x MJX's control
steps/s at batch 32-128 without pixels, ~1.2x with both 64x64 cameras (the renderer dominates),
and 5-10 s to compile a step program instead of 27-44 s. Programs holding the callback cannot be
serialised by ``jax.export`` (opd_jax/traced.py's program cache).

The callback returns every field the suite reads rather than leaving them to one mjx.forward
after it: at batch 128 the whole jitted C control step took 22 ms, a vmapped mjx.forward alone
47 ms after a 28 s compile.

Batching: ``vmap_method="broadcast_all"`` hands the callback the whole batch (every argument
with the same leading batch axes), so one call steps all worlds. The worlds run in a
``mujoco.batch.Batch`` (one per batch size, kept on the object): its state rows are numpy
views, so loading the batch's states, the computed-torque law and reading the results are a
few vectorized numpy operations per substep, and the physics of all worlds is one C call per
substep on ``threads`` threads. ``mujoco.rollout`` steps open-loop (controls fixed up front), so
it cannot apply a law that reads the state between substeps.

Semantics, those of ``TabletopSuite._physics`` under MJX (which the tests check):
- ``mj_step`` and ``mjx.step`` both leave the derived fields (poses, mass matrix, contacts) of
  the state before the last substep's integration; the returned mjx.Data has C's.
- computed torque: tau = M (w^2 (q* - q) - 2 z w qdot) with the mass matrix of the previous
  substep's forward pass, as ``control.computed_torque`` reads ``d._impl.M``. For the first
  substep that is the input data's M, so M travels in and out of the callback.
- The state is fully given by the input data (time, qpos, qvel, act, warm start, applied
  forces, mocap poses, ctrl, M): the callback is a pure function, whatever world sat in a
  Batch row before.
- Filled from C: ``STATE_FIELDS``, ``DERIVED_FIELDS``, ``_impl.M`` and the contacts' geom1,
  geom2, geom, dist, pos and frame. Every other field (forces, efc arrays, the contacts' solver
  parameters) keeps the input data's values. The suite reads only filled fields.
- Contacts: MJX keeps a fixed array with one slot per candidate contact of each <pair>, at any
  distance; C lists only contacts closer than the pair's margin (0 here). The predicates count a
  touch at dist < ``TOUCH_DIST``, so contacts are listed by a copy of the model whose pairs have
  margin = gap = TOUCH_DIST (reported, but outside the constraint: includemargin stays 0),
  queried at the pre-integration state. Slots the C contacts do not fill have dist = ``FAR``
  and geoms -1; if C finds more contacts than slots, the closest are kept. The engines' touches
  can still differ at exact contact: a bowl placed exactly on a box at reset has dist -1.3e-9 in
  C, while MJX's box-box test reports no contact (dist 1.0, its value for separated boxes).
- control="servo": plain mj_step calls with ctrl = the targets (tests: to 1e-7 rad). MJX and C
  differ under this law (0.1 rad within 3 control steps, the position servos at their force
  limits; under the torque law they agree to 2.4e-7 rad), so servo checkpoints made under MJX
  meet other dynamics here.
- Blow-ups: autoreset is off in the C model, so a diverging world returns NaNs (MJX does too)
  and the suite's finite check restores its last state. MuJoCo prints a warning once a world.
"""
from __future__ import annotations

import copy
import functools
import threading

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import batch as mj_batch
from mujoco import mjx

from envs import control

TOUCH_DIST = 2e-3  # m: TabletopSuite._privileged_impl's contact threshold (dist < 2e-3)
FAR = 1e10  # dist of contact slots that hold no C contact
# State rows of a Batch that the input data sets (empty ones, e.g. act without actuator
# dynamics, are dropped per model).
STATE_FIELDS = ("time", "qpos", "qvel", "act", "qacc_warmstart", "ctrl", "qfrc_applied",
                "xfrc_applied", "mocap_pos", "mocap_quat")
# Derived fields read back after a step or forward pass: what the suite's code reads (poses,
# joint frames, site and camera frames), plus the accelerations and a few cheap extras.
DERIVED_FIELDS = ("qacc", "xpos", "xquat", "xmat", "xipos", "ximat", "xanchor", "xaxis",
                  "geom_xpos", "geom_xmat", "site_xpos", "site_xmat", "cam_xpos", "cam_xmat",
                  "subtree_com", "actuator_force", "qfrc_actuator")


class CPhysics:
  """The C backend of one suite's model. ``step(d, target)`` / ``forward(d)`` take and return
  one world's mjx.Data (vmap them for a batch); the host side keeps one ``mujoco.batch.Batch``
  per batch size it has seen and a pool of MjData for contact queries, guarded by a lock (two
  programs may call back at once from XLA's threads)."""

  def __init__(self, mj_model: mujoco.MjModel, substeps: int, law: str,
               arm_force: np.ndarray, threads: int = 1):
    if law not in control.CONTROL_MODES:
      raise ValueError(f"control must be one of {control.CONTROL_MODES}, got {law!r}")
    self.substeps, self.law, self.threads = int(substeps), law, int(threads)
    self.bandwidth = control.TORQUE_BANDWIDTH
    self.damping_ratio = control.TORQUE_DAMPING_RATIO
    self.arm_force = np.asarray(arm_force, np.float64)
    # The suite's own model stays untouched: it backs MJX, the renderer and the indexing.
    self.model = copy.copy(mj_model)
    self.model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_AUTORESET)
    self.touch_model = copy.copy(self.model)
    margin = np.maximum(self.touch_model.pair_margin, TOUCH_DIST)
    self.touch_model.pair_gap[:] += margin - self.touch_model.pair_margin
    self.touch_model.pair_margin[:] = margin
    m, probe = self.model, mujoco.MjData(self.model)
    self.state_fields = tuple(f for f in STATE_FIELDS if np.size(getattr(probe, f)))
    self.derived_fields = tuple(f for f in DERIVED_FIELDS if np.size(getattr(probe, f)))
    # The mass matrix in C's CSR layout (lower triangle, rows' diagonals last), which MJX's
    # sparse M shares; MJX's dense M is the full matrix.
    self.nv, self.nC = m.nv, m.nC
    self.csr_rows = np.repeat(np.arange(m.nv), m.M_rownnz)
    self.csr_cols = np.asarray(m.M_colind[:m.nC])
    pos = {(int(r), int(c)): k for k, (r, c) in enumerate(zip(self.csr_rows, self.csr_cols))}
    n = control.N_ARM
    self.arm_csr = np.array([[pos.get((max(i, j), min(i, j)), 0) for j in range(n)]
                             for i in range(n)], np.int64)
    self.arm_mask = np.array([[(max(i, j), min(i, j)) in pos for j in range(n)]
                              for i in range(n)])
    self._batches: dict[int, tuple] = {}
    self._pool: list[mujoco.MjData] = []
    self._lock = threading.Lock()

  # ------------------------------------------------------------------ JAX side
  def step(self, d: mjx.Data, target: jax.Array) -> mjx.Data:
    """One control step (``substeps`` physics steps) towards joint targets [nu]."""
    return self._call(d, jnp.asarray(target, jnp.float32), self._host_step)

  def forward(self, d: mjx.Data) -> mjx.Data:
    """``mj_forward``: the derived fields of ``d``'s state (the suite's reset)."""
    return self._call(d, None, self._host_forward)

  def _call(self, d, target, host):
    impl = d._impl  # pylint: disable=protected-access
    c, mass = impl.contact, impl.M
    if mass.shape not in ((self.nv, self.nv), (self.nC,)):
      raise NotImplementedError(f"MJX mass matrix of shape {mass.shape}")
    names = self.state_fields + self.derived_fields
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    shapes = [spec(getattr(d, f)) for f in names] + [spec(mass)]
    shapes += [spec(c.dist), spec(c.pos), spec(c.frame), spec(c.geom1), spec(c.geom2)]
    args = [getattr(d, f) for f in self.state_fields] + [mass]
    if target is not None:
      args.append(target)
    # the number of contact slots, MJX's, is static: bound here rather than passed as an array
    host = functools.partial(host, c.dist.shape[-1])
    out = jax.pure_callback(host, tuple(shapes), *args, vmap_method="broadcast_all")
    k = len(names)
    dist, cpos, frame, g1, g2 = out[k + 1:]
    contact = c.replace(dist=dist, pos=cpos, frame=frame, geom1=g1, geom2=g2,
                        geom=jnp.stack([g1, g2], -1))
    return d.replace(_impl=impl.replace(M=out[k], contact=contact), **dict(zip(names, out[:k])))

  # ----------------------------------------------------------------- host side
  def _batch(self, n: int):
    """The Batch of n worlds and its bound arrays (state rows writable, outputs read-only)."""
    if n not in self._batches:
      b = mj_batch.Batch(self.model, n, nthread=self.threads)
      rows = {f: b.bind(f) for f in self.state_fields + self.derived_fields + ("M",)}
      self._batches[n] = (b, rows)
    while len(self._pool) < n:
      self._pool.append(mujoco.MjData(self.touch_model))
    return self._batches[n]

  def _load(self, arrays):
    """Flattens the batch axes (none for an unbatched call), loads the states into a Batch."""
    arrays = [np.asarray(x) for x in arrays]  # the callback may get jax Arrays
    lead = arrays[1].shape[:-1]  # qpos [..., nq]
    n = int(np.prod(lead, dtype=np.int64))
    b, rows = self._batch(n)
    for f, x in zip(self.state_fields, arrays):
      rows[f][...] = np.reshape(x, rows[f].shape)
    m_in = np.reshape(arrays[len(self.state_fields)], (n, -1))
    return lead, n, b, rows, m_in

  def _arm_block(self, m_flat: np.ndarray) -> np.ndarray:
    """M's arm block [n, 7, 7] from a flat dense [n, nv * nv] or CSR [n, nC] mass matrix."""
    k = control.N_ARM
    if m_flat.shape[1] == self.nv * self.nv:
      return m_flat.reshape(-1, self.nv, self.nv)[:, :k, :k].astype(np.float64)
    return np.where(self.arm_mask, m_flat[:, self.arm_csr], 0.0)

  def _host_step(self, slots, *arrays):
    with self._lock:
      lead, n, b, rows, m_in = self._load(arrays)
      target = np.asarray(arrays[-1], np.float64).reshape(n, -1)
      k = control.N_ARM
      qpos, qvel, ctrl = rows["qpos"], rows["qvel"], rows["ctrl"]
      if self.law == "servo":
        ctrl[...] = target
        if self.substeps > 1:
          b.step(nstep=self.substeps - 1)
        q_pre = qpos.copy()
        b.step(nstep=1)
      else:
        w, z = self.bandwidth, self.damping_ratio
        arm_m = self._arm_block(m_in)
        for s in range(self.substeps):
          if s:
            arm_m = self._arm_block(rows["M"])
          acc = w * w * (target[:, :k] - qpos[:, :k]) - 2.0 * z * w * qvel[:, :k]
          tau = np.einsum("bij,bj->bi", arm_m, acc)
          ctrl[:, :k] = np.clip(tau, -self.arm_force, self.arm_force)
          ctrl[:, k:] = target[:, k:]
          if s == self.substeps - 1:
            q_pre = qpos.copy()
          b.step(nstep=1)
      return self._outputs(lead, n, rows, m_in.shape[1], q_pre, slots)

  def _host_forward(self, slots, *arrays):
    with self._lock:
      lead, n, b, rows, m_in = self._load(arrays)
      b.forward()
      return self._outputs(lead, n, rows, m_in.shape[1], rows["qpos"].copy(), slots)

  def _outputs(self, lead, n, rows, m_size, q_pre, slots):
    f32 = lambda x, *shape: np.asarray(x, np.float32).reshape(lead + shape)  # noqa: E731
    out = [f32(rows[f], *rows[f].shape[1:]) for f in self.state_fields]
    out += [f32(rows[f], *self._mjx_shape(f, rows[f])) for f in self.derived_fields]
    m_csr = rows["M"]
    if m_size == self.nv * self.nv:
      dense = np.zeros((n, self.nv, self.nv))
      dense[:, self.csr_rows, self.csr_cols] = m_csr
      dense[:, self.csr_cols, self.csr_rows] = m_csr
      out.append(f32(dense, self.nv, self.nv))
    else:
      out.append(f32(m_csr, self.nC))
    mocap = (rows["mocap_pos"], rows["mocap_quat"]) if "mocap_pos" in rows else None
    return tuple(out) + self._contacts(lead, n, q_pre, mocap, slots)

  @staticmethod
  def _mjx_shape(name, rows):
    """MJX keeps rotation matrices as [..., 3, 3] where MjData has [..., 9]."""
    shape = rows.shape[1:]
    return shape[:-1] + (3, 3) if name.endswith(("xmat", "ximat")) else shape

  def _contacts(self, lead, n, q_pre, mocap, slots):
    """Contacts of each world at q_pre (within TOUCH_DIST), in the MJX contact array's slots."""
    dist = np.full((n, slots), FAR, np.float32)
    cpos = np.zeros((n, slots, 3), np.float32)
    frame = np.zeros((n, slots, 9), np.float32)
    g1 = np.full((n, slots), -1, np.int32)
    g2 = np.full((n, slots), -1, np.int32)
    m = self.touch_model
    for i in range(n):
      d = self._pool[i]
      d.qpos[:] = q_pre[i]
      if mocap is not None:
        d.mocap_pos[:], d.mocap_quat[:] = mocap[0][i], mocap[1][i]
      mujoco.mj_kinematics(m, d)
      mujoco.mj_collision(m, d)
      c, nc = d.contact, d.ncon
      if not nc:
        continue
      keep = np.argsort(c.dist[:nc], kind="stable")[:slots] if nc > slots else slice(None)
      cd = c.dist[:nc][keep]
      j = len(cd)
      dist[i, :j], cpos[i, :j], frame[i, :j] = cd, c.pos[:nc][keep], c.frame[:nc][keep]
      g1[i, :j], g2[i, :j] = c.geom1[:nc][keep], c.geom2[:nc][keep]
    return (dist.reshape(lead + (slots,)), cpos.reshape(lead + (slots, 3)),
            frame.reshape(lead + (slots, 3, 3)), g1.reshape(lead + (slots,)),
            g2.reshape(lead + (slots,)))
