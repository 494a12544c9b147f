"""The environment side of the PyTorch baseline: the project's tabletop suites stepped by MuJoCo's
C engine, world by world, and rendered by MuJoCo's own OpenGL renderer, the way PyTorch
robot-learning stacks run LIBERO (robosuite + gymnasium-style vector envs).

    cfg = CConfig.from_suite("libero_spatial", image_size=64)   # imports JAX (envs) once
    qpos, tasks = initial_states("libero_spatial", 8)            # JAX resets, done once
    venv = SubprocVecEnv(8, cfg, qpos, tasks, num_workers=4)
    obs = venv.reset()                     # {"agentview", "wrist": uint8 [n, H, W, 3],
    obs, reward, done = venv.step(actions)  #  "proprio": float32 [n, 8], "task_id": int32 [n]}

Same scene (the JAX suite's MJCF), same initial states (its resets) and the same control law as
``envs/control.py``, in float64 numpy on MuJoCo C quantities: damped-least-squares IK from the TCP
site and the arm joints' ``xaxis``/``xanchor``, the null-space pull to the home posture, joint
clipping; then ``substeps`` ``mj_step`` calls, each with the computed torque
``M(q) (w^2 (q* - q) - 2 z w qdot)`` (``mj_mulM``, clipped to the motor range) and the finger
targets in ``ctrl``. As in MJX, ``mj_step`` leaves kinematics and the mass matrix of the state
before its integration, and the law reads them exactly as the JAX suite does.

Success: predicates are not evaluated by default (``reward`` 0, ``done`` at
``max_episode_steps``), enough for a steps/s benchmark. ``check_success=True`` builds the
predicates' inputs in numpy (poses, contacts with dist < 2 mm) and reuses
``envs.predicates.all_satisfied`` under ``jax.jit``, which imports JAX into every process
that steps worlds. C MuJoCo only reports contacts within a geom's margin, MJX all candidate pairs,
so a touch within (margin, 2 mm) may differ.

Rendering on a headless machine: MuJoCo's renderer needs an OpenGL context. This module sets
``MUJOCO_GL=egl``, ``EGL_PLATFORM=surfaceless`` and ``LIBGL_ALWAYS_SOFTWARE=1`` (Mesa llvmpipe)
with ``os.environ.setdefault`` before importing mujoco, so exported values win (e.g. unset
``LIBGL_ALWAYS_SOFTWARE`` on a machine with a GPU). Without ``EGL_PLATFORM`` creating a
renderer hung on the CPU machine this was written on. Worker processes inherit the variables.
If mujoco was imported earlier (``import envs`` does) with MUJOCO_GL unset, it chose GLFW; the
module then switches mujoco's renderer to EGL, as long as PyOpenGL is not loaded yet.
llvmpipe spends most of a frame on MuJoCo's default 4096^2 shadow map; ``shadow_size`` changes it
(0: no shadows).

``mujoco.rollout`` (MuJoCo 4.0) is not used: it steps many worlds in C threads but open-loop,
with controls given up front for every step; there is no hook between physics steps, so it
cannot apply a per-substep computed-torque law (calling it one step at a time would lose each
world's mass matrix and solver warm start between calls).
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys

for _k, _v in (("MUJOCO_GL", "egl"), ("EGL_PLATFORM", "surfaceless"),
               ("LIBGL_ALWAYS_SOFTWARE", "1")):
  os.environ.setdefault(_k, _v)

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from mujoco.rendering.classic import gl_context as _gl  # noqa: E402

N_ARM = 7


def _use_requested_gl():
  """mujoco picks its GL backend from MUJOCO_GL when first imported; when that was before this
  module (``import envs`` imports mujoco) with MUJOCO_GL unset, it chose GLFW, which needs a
  display. Switch to the backend requested now, while PyOpenGL is not yet loaded."""
  want = os.environ["MUJOCO_GL"].lower().strip()
  if want == getattr(_gl, "_MUJOCO_GL", want) or want not in ("egl", "osmesa"):
    return
  if "OpenGL" in sys.modules:  # already bound to another platform: leave it
    return
  if want == "egl":
    from mujoco.egl import GLContext  # pylint: disable=import-outside-toplevel
  else:
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    from mujoco.osmesa import GLContext  # pylint: disable=import-outside-toplevel
  _gl.GLContext, _gl._MUJOCO_GL = GLContext, want  # pylint: disable=protected-access


_use_requested_gl()

CAMERAS = ("agentview", "wrist")


@dataclasses.dataclass
class CConfig:
  """Everything a process needs to build a suite's worlds, without JAX (picklable)."""
  xml: str
  substeps: int
  tcp_site: int
  max_episode_steps: int
  # envs.control's constants (from_suite reads them there)
  pos_scale: float
  rot_scale: float
  finger_open: float
  home_qpos: tuple
  bandwidth: float
  damping_ratio: float
  ik_damping: float
  nullspace_gain: float
  image_size: int = 64
  render: bool = True
  shadow_size: int | None = None  # None: the model's (4096); 0: shadows off
  check_success: bool = False
  tables: dict | None = None  # the predicates' entity tables (check_success only)

  @classmethod
  def from_suite(cls, suite: str, image_size: int = 64, render: bool = True,
                 shadow_size: int | None = None, check_success: bool = False,
                 **suite_kw) -> "CConfig":
    """From the project's suite ``envs.make(suite, render=False, **suite_kw)`` (imports JAX)."""
    import inspect  # pylint: disable=import-outside-toplevel

    import envs  # pylint: disable=import-outside-toplevel
    from envs import control  # pylint: disable=import-outside-toplevel
    env = envs.make(suite, render=False, **suite_kw)
    if env.control != "torque":
      raise ValueError(f"only the computed-torque law is ported, got control={env.control!r}")
    defaults = inspect.signature(control.joint_targets).parameters
    tables = dict(ent_body=env.ent_body, pad_geoms=env.pad_geoms, ent_top=env.ent_top,
                  region_offset=env.region_offset, region_half=env.region_half,
                  geom_entity=env.geom_entity, art_qadr=env.art_qadr, art_range=env.art_range,
                  task_goals=np.asarray(env.task_goals))
    return cls(xml=env.xml, substeps=env.substeps, tcp_site=env.tcp_site,
               max_episode_steps=env.max_episode_steps, image_size=image_size, render=render,
               shadow_size=shadow_size, pos_scale=control.POS_SCALE,
               rot_scale=control.ROT_SCALE, finger_open=control.FINGER_OPEN,
               home_qpos=tuple(control.HOME_QPOS), bandwidth=control.TORQUE_BANDWIDTH,
               damping_ratio=control.TORQUE_DAMPING_RATIO,
               ik_damping=defaults["damping"].default,
               nullspace_gain=defaults["nullspace_gain"].default,
               check_success=check_success, tables=tables)


def initial_states(suite: str, n: int, seed: int = 0, **suite_kw) -> tuple[np.ndarray, np.ndarray]:
  """qpos [n, nq] (float64) and task ids [n] from the JAX suite's ``reset(PRNGKey(seed + i),
  i % num_tasks)``: the bank of initial states, computed once up front (~0.5 s a reset after
  a first compile of ~10-25 s)."""
  import jax  # pylint: disable=import-outside-toplevel

  import envs  # pylint: disable=import-outside-toplevel
  env = envs.make(suite, render=False, **suite_kw)
  tasks = np.arange(n) % env.num_tasks
  qpos = [np.asarray(env.reset(jax.random.PRNGKey(seed + i), int(t)).data.qpos, np.float64)
          for i, t in enumerate(tasks)]
  return np.stack(qpos), tasks.astype(np.int32)


def rotvec(mat: np.ndarray) -> np.ndarray:
  """Axis-angle vector [3] (angle in [0, pi]) of a rotation matrix, via MuJoCo's quaternion."""
  q = np.empty(4)
  mujoco.mju_mat2Quat(q, np.ascontiguousarray(mat, np.float64).reshape(9))
  q = q / np.linalg.norm(q) * (1.0 if q[0] >= 0 else -1.0)
  n = np.linalg.norm(q[1:])
  return q[1:] * (2.0 * np.arctan2(n, q[0]) / n if n > 1e-12 else 2.0 / q[0])


class CSuite:
  """One world of a suite in MuJoCo C. ``suite``: a suite name or a :class:`CConfig`.
  ``shared``: another CSuite whose model and renderer this world uses (one per process)."""

  def __init__(self, suite, image_size: int = 64, render: bool = True,
               shared: "CSuite | None" = None, **kw):
    if shared is not None:
      self.cfg, self.model, self.renderer = shared.cfg, shared.model, shared.renderer
      self._success_fn = shared._success_fn
    else:
      self.cfg = suite if isinstance(suite, CConfig) else CConfig.from_suite(
          suite, image_size=image_size, render=render, **kw)
      cfg = self.cfg
      self.model = mujoco.MjModel.from_xml_string(cfg.xml)
      if cfg.shadow_size:
        self.model.vis.quality.shadowsize = cfg.shadow_size
      self.renderer = None
      if cfg.render:
        self.renderer = mujoco.Renderer(self.model, cfg.image_size, cfg.image_size)
        if cfg.shadow_size == 0:
          self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
      self._success_fn = None
      if cfg.check_success:
        import jax  # pylint: disable=import-outside-toplevel

        from envs import predicates  # pylint: disable=import-outside-toplevel
        self._success_fn = jax.jit(predicates.all_satisfied)
    m, cfg = self.model, self.cfg
    self.data = mujoco.MjData(m)
    self._lo, self._hi = m.jnt_range[:N_ARM, 0].copy(), m.jnt_range[:N_ARM, 1].copy()
    self._force = m.actuator_ctrlrange[:N_ARM, 1].copy()
    self._home = np.asarray(cfg.home_qpos, np.float64)
    self._spec = mujoco.mjtState.mjSTATE_INTEGRATION
    self._saved = np.empty(mujoco.mj_stateSize(m, self._spec))
    self._acc = np.zeros(m.nv)
    self._tau = np.zeros(m.nv)
    self.task_id, self.steps = 0, 0

  def close(self):
    if self.renderer is not None:
      self.renderer.close()
      self.renderer = None

  # ------------------------------------------------------------------ env API
  def reset(self, qpos: np.ndarray, task_id: int = 0) -> dict:
    """Starts an episode at ``qpos`` [nq] (a JAX reset's), at rest, fingers open."""
    m, d = self.model, self.data
    mujoco.mj_resetData(m, d)
    d.qpos[:] = qpos
    d.ctrl[:N_ARM] = 0.0
    d.ctrl[N_ARM:] = self.cfg.finger_open
    mujoco.mj_forward(m, d)
    self.task_id, self.steps = int(task_id), 0
    return self.observe()

  def step(self, action: np.ndarray) -> tuple[dict, float, bool]:
    """One 20 Hz control step: (obs, reward, done)."""
    m, d = self.model, self.data
    a = np.asarray(action, np.float64)
    a = np.clip(np.where(np.isfinite(a), a, 0.0), -1.0, 1.0)
    mujoco.mj_getState(m, d, self._saved, self._spec)
    target = self.joint_targets(a)
    for _ in range(self.cfg.substeps):
      d.ctrl[:N_ARM] = self.computed_torque(target[:N_ARM])
      d.ctrl[N_ARM:] = target[N_ARM:]
      mujoco.mj_step(m, d)
    finite = (np.isfinite(d.qpos).all() and np.isfinite(d.qvel).all()
              and (np.abs(d.xpos) < 10.0).all())
    if not finite:  # keep the last finite state and end the episode, as the JAX suite does
      mujoco.mj_setState(m, d, self._saved, self._spec)
      mujoco.mj_forward(m, d)
    self.steps += 1
    success = self.success() if self._success_fn is not None else False
    done = success or not finite or self.steps >= self.cfg.max_episode_steps
    return self.observe(), float(success), bool(done)

  # -------------------------------------------------------------- control law
  def joint_targets(self, a: np.ndarray) -> np.ndarray:
    """``envs.control.joint_targets``: targets [9] (7 arm joints, 2 fingers)."""
    cfg, d = self.cfg, self.data
    pos = d.site_xpos[cfg.tcp_site]
    err = np.concatenate([a[:3] * cfg.pos_scale, a[3:6] * cfg.rot_scale])
    axes, anchors = d.xaxis[:N_ARM], d.xanchor[:N_ARM]
    jac = np.concatenate([np.cross(axes, pos - anchors).T, axes.T], axis=0)  # [6, 7]
    jjt = jac @ jac.T + cfg.ik_damping ** 2 * np.eye(6)
    j_pinv = jac.T @ np.linalg.inv(jjt)
    q = d.qpos[:N_ARM]
    dq = j_pinv @ err + (np.eye(N_ARM) - j_pinv @ jac) @ (cfg.nullspace_gain * (self._home - q))
    finger = cfg.finger_open * (1.0 - a[6]) * 0.5
    return np.concatenate([np.clip(q + dq, self._lo, self._hi), [finger, finger]])

  def computed_torque(self, q_target: np.ndarray) -> np.ndarray:
    """``envs.control.computed_torque`` with ``mj_mulM``: arm torques [7], clipped."""
    cfg, d = self.cfg, self.data
    w, z = cfg.bandwidth, cfg.damping_ratio
    self._acc[:N_ARM] = w * w * (q_target - d.qpos[:N_ARM]) - 2.0 * z * w * d.qvel[:N_ARM]
    mujoco.mj_mulM(self.model, d, self._tau, self._acc)
    return np.clip(self._tau[:N_ARM], -self._force, self._force)

  # -------------------------------------------------------------- observation
  def proprio(self) -> np.ndarray:
    d, site = self.data, self.cfg.tcp_site
    return np.concatenate([d.site_xpos[site], rotvec(d.site_xmat[site]),
                           d.qpos[N_ARM:N_ARM + 2]]).astype(np.float32)

  def render(self, camera: str) -> np.ndarray:
    """uint8 [H, W, 3] from MuJoCo's renderer (a new array)."""
    self.renderer.update_scene(self.data, camera=camera)
    return self.renderer.render()

  def observe(self) -> dict:
    obs = dict(proprio=self.proprio(), task_id=np.int32(self.task_id))
    if self.renderer is not None:
      for cam in CAMERAS:
        obs[cam] = self.render(cam)
    return obs

  # ------------------------------------------------------------------ success
  def privileged(self) -> dict:
    """The inputs of ``envs.predicates`` (``TabletopSuite.privileged``'s keys they read)."""
    t, d = self.cfg.tables, self.data
    ent_pos = d.xpos[t["ent_body"]].copy()
    ent_mat = d.xmat[t["ent_body"]].reshape(-1, 3, 3).copy()
    ent_pos[1:3] = d.geom_xpos[t["pad_geoms"]]
    ent_mat[1:3] = d.geom_xmat[t["pad_geoms"]].reshape(-1, 3, 3)
    E = len(ent_pos)
    touch = np.zeros((E + 1, E + 1), bool)
    c = d.contact
    act = c.dist < 2e-3
    e1, e2 = t["geom_entity"][c.geom1[act]], t["geom_entity"][c.geom2[act]]
    touch[e1, e2] = touch[e2, e1] = True
    priv = dict(ent_pos=ent_pos, ent_mat=ent_mat, region_half=t["region_half"],
                target_pos=ent_pos + np.einsum("eij,ej->ei", ent_mat, t["ent_top"]),
                region_centre=ent_pos + np.einsum("eij,ej->ei", ent_mat, t["region_offset"]),
                joint_q=d.qpos[t["art_qadr"]], joint_range=t["art_range"])
    return {k: np.asarray(v, np.float32) for k, v in priv.items()} | {"touch": touch[:E, :E]}

  def stages(self) -> np.ndarray:
    """Per-stage goal booleans [S] of this world's task (needs ``check_success``)."""
    goals = self.cfg.tables["task_goals"][self.task_id]
    return np.asarray(self._success_fn(self.privileged(), goals))

  def success(self) -> bool:
    return bool(self.stages().all())


def _stack(obs_list: list[dict], join=np.stack) -> dict:
  return {k: join([o[k] for o in obs_list]) for k in obs_list[0]}


class SerialVecEnv:
  """n worlds stepped one after another in this process (one model, one renderer).

  ``qpos`` [B, nq] / ``task_ids`` [B]: the initial-state bank; world i starts at bank entry
  i % B and, when its episode ends, restarts at its next entry (auto-reset: ``step`` returns the
  finished episode's reward/done with the new episode's first observation, as gymnasium's
  vector envs and ``envs.core.AutoReset`` do).
  """

  def __init__(self, n: int, cfg: CConfig, qpos: np.ndarray, task_ids: np.ndarray):
    self.n, self.cfg = n, cfg
    self.qpos, self.task_ids = np.asarray(qpos, np.float64), np.asarray(task_ids)
    self.worlds = [CSuite(cfg)]
    self.worlds += [CSuite(cfg, shared=self.worlds[0]) for _ in range(n - 1)]
    self._next = list(range(n))

  def _reset_world(self, i: int) -> dict:
    b = self._next[i] % len(self.qpos)
    self._next[i] += self.n
    return self.worlds[i].reset(self.qpos[b], self.task_ids[b])

  def reset(self) -> dict:
    return _stack([self._reset_world(i) for i in range(self.n)])

  def step(self, actions: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    """actions [n, 7] -> (obs of stacked arrays, reward [n] float32, done [n] bool)."""
    out, rew, done = [], np.zeros(self.n, np.float32), np.zeros(self.n, bool)
    for i, w in enumerate(self.worlds):
      obs, rew[i], done[i] = w.step(actions[i])
      out.append(self._reset_world(i) if done[i] else obs)
    return _stack(out), rew, done

  def close(self):
    self.worlds[0].close()


def _worker(conn, serial_cls, n, cfg, qpos, task_ids):
  """Serves ``serial_cls(n, ...)``: each message ``(method, arg)`` calls that method (``reset``
  without an argument) and sends back its result, until ``close``."""
  env = serial_cls(n, cfg, qpos, task_ids)
  try:
    while True:
      cmd, arg = conn.recv()
      if cmd == "close":
        break
      conn.send(env.reset() if cmd == "reset" else getattr(env, cmd)(arg))
  finally:
    env.close()
    conn.close()


class SubprocVecEnv:
  """n worlds split over ``num_workers`` processes (default ``os.cpu_count()``, at most n), each
  a :class:`SerialVecEnv` behind a pipe, as gymnasium's ``AsyncVectorEnv`` runs them: ``step``
  sends every worker its slice of actions, then gathers and concatenates the results. Worlds
  see the same bank entries as in a ``SerialVecEnv(n, ...)``. ``context``: the start method
  ("spawn": safe when the parent has started JAX's threads). Subclasses name the serial env
  their workers run in ``serial_cls``."""
  serial_cls = SerialVecEnv

  def __init__(self, n: int, cfg: CConfig, qpos: np.ndarray, task_ids: np.ndarray,
               num_workers: int | None = None, context: str = "spawn"):
    self.n = n
    k = self.num_workers = max(1, min(n, num_workers or os.cpu_count() or 1))
    sizes = [n // k + (i < n % k) for i in range(k)]
    self._starts = np.cumsum([0] + sizes)
    ctx = mp.get_context(context)
    self._conns, self._procs = [], []
    for i, size in enumerate(sizes):
      parent, child = ctx.Pipe()
      bank = _slice_bank(qpos, task_ids, n, self._starts[i], size)
      p = ctx.Process(target=_worker, args=(child, self.serial_cls, size, cfg, *bank),
                      daemon=True)
      p.start()
      child.close()
      self._conns.append(parent)
      self._procs.append(p)

  def reset(self) -> dict:
    for c in self._conns:
      c.send(("reset", None))
    return _stack([c.recv() for c in self._conns], np.concatenate)

  def _scatter(self, method: str, actions) -> tuple:
    """Every worker runs ``method`` on its slice of ``actions``; the results (an observation
    dict, then arrays) concatenated over the worlds."""
    actions = np.asarray(actions)
    for c, a, b in zip(self._conns, self._starts[:-1], self._starts[1:]):
      c.send((method, actions[a:b]))
    res = [c.recv() for c in self._conns]
    return (_stack([r[0] for r in res], np.concatenate),
            *(np.concatenate([r[j] for r in res]) for j in range(1, len(res[0]))))

  def step(self, actions: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    return self._scatter("step", actions)

  def close(self):
    for c in self._conns:
      try:
        c.send(("close", None))
      except (BrokenPipeError, OSError):
        pass
    for p in self._procs:
      p.join(timeout=10)
      if p.is_alive():
        p.terminate()


def _slice_bank(qpos, task_ids, n, start, size):
  """The bank as worker-local worlds [start, start + size) of n see it in a SerialVecEnv(n):
  world start + j takes entries start + j, start + j + n, ...; a worker's SerialVecEnv(size)
  takes local entries j, j + size, ..., so the local bank is laid out [round, world]."""
  B = len(qpos)
  rounds = B // np.gcd(n, B)  # after `rounds` resets, world start + j is back at its first entry
  idx = np.array([(start + j + r * n) % B for r in range(rounds) for j in range(size)])
  return np.asarray(qpos)[idx], np.asarray(task_ids)[idx]

