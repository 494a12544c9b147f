"""The tabletop suite engine shared by every LIBERO-style suite.

A suite is data (:class:`SuiteSpec`): a scene (bodies + contact rules), its
entities (what predicates and experts talk about), and tasks (instruction,
initial layout, goals). :class:`TabletopSuite` turns that into pure, unbatched
``reset`` / ``step`` functions over one MJX model shared by all the suite's
tasks, so one batch can mix tasks (the task id lives in the state).

Physics sits behind a narrow interface — controls in; body poses, joint
values and contacts out (:meth:`TabletopSuite.privileged`) — so predicates,
experts and the renderer never touch MJX internals.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx
from mujoco.mjx._src import forward as mjx_forward

from envs import control, experts, physics_c, predicates, scene
from envs.core import State

# the control module's names, where __init__'s `control` argument shadows the module
CONTROL_MODES, N_ARM = control.CONTROL_MODES, control.N_ARM
SANE_BOX = 10.0  # m: a body farther out along any axis means the physics blew up
PHYSICS_BACKENDS = ("mjx", "c")
PARK_X = 2.5  # objects a task does not use wait here, behind the agentview camera


@dataclasses.dataclass(frozen=True)
class Entity:
  """Something predicates and experts refer to (a body of the scene).

  top: local point a placed object should sit on (ON target), body frame.
  region: (centre, half-extents) box in the body frame for IN, or None.
  grasp: for movable objects, (grasp height above the origin, gripper yaw
    offset in the object frame, half-width across the grasp, bottom offset
    below the origin).
  """
  name: str
  body: str
  top: tuple[float, float, float] = (0.0, 0.0, 0.0)
  region: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
  grasp: tuple[float, float, float, float] | None = None


@dataclasses.dataclass(frozen=True)
class Articulation:
  """A slide or hinge joint the gripper operates through a handle entity."""
  name: str
  joint: str
  handle: str  # entity name of the handle
  kind: str  # "slide" or "hinge"


@dataclasses.dataclass(frozen=True)
class Task:
  """instruction; layout: {object: (x, y, z, yaw)} for objects in the scene
  (others are parked); noise: (dx, dy, dyaw) half-ranges, per object or one
  for all; joints: {articulation: initial value}; goals: ((kind, a, b), ...)
  with entity / articulation names."""
  instruction: str
  layout: dict[str, tuple[float, float, float, float]]
  goals: tuple[tuple[int, str, str], ...]
  noise: dict[str, tuple[float, float, float]] = dataclasses.field(default_factory=dict)
  joints: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SuiteSpec:
  name: str
  bodies: tuple[scene.Body, ...]
  rules: tuple[tuple[str, str], ...]
  objects: tuple[Entity, ...]  # movable (free-joint) objects
  fixtures: tuple[Entity, ...]
  articulations: tuple[Articulation, ...]
  tasks: tuple[Task, ...]
  max_episode_steps: int
  default_noise: tuple[float, float, float] = (0.02, 0.02, 0.3)
  # Newton solver iterations per physics step (scene.DEFAULT_OPTION says why 8)
  solver_iterations: int = int(scene.DEFAULT_OPTION["iterations"])


AGENTVIEW = dict(name="agentview", pos="1.25 0 0.75", xyaxes="0 1 0 -0.53 0 0.85", fovy="50")


class TabletopSuite:
  """Pure reset/step for one suite. Config:

  image_size: H = W of both cameras (64 for CPU work; 128 and 224 work).
  render: False gives image-free observations (for experts and evaluation of
    privileged policies).
  substeps: physics steps per 20 Hz control step (timestep = 0.05 / substeps).
  eval_seed: seed of the 50 fixed evaluation initial states per task.
  control: how the arm tracks the IK joint targets within a control step, "torque" (computed
    torque on motors: straight Cartesian motion; the default) or "servo" (position actuators,
    the law of checkpoints made before 2026-12); see ``envs.control``.
  solver_iterations: MuJoCo Newton iterations per physics step (None: the suite's own).
  physics: "mjx" (the default) or "c": MuJoCo's C engine, called from the jitted step through
    ``jax.pure_callback`` (``envs.physics_c``; for CPU hosts: faster to compile and to run).
  """

  action_size = 7
  control_dt = 0.05

  def __init__(self, spec: SuiteSpec, image_size: int = 64, render: bool = True,
               substeps: int = 5, eval_seed: int = 0, max_episode_steps: int | None = None,
               depth: bool = False, segmentation: bool = False, control: str = "torque",
               solver_iterations: int | None = None, physics: str = "mjx"):
    """``depth`` / ``segmentation``: also observe ``{camera}_depth`` (float32 [H, W], metres
    along the ray, 1e4 where nothing is hit) and ``{camera}_segmentation`` (int32 [H, W], MuJoCo
    geom id, -1 where nothing is hit) for both cameras."""
    if image_size < 8:
      raise ValueError(f"image_size must be >= 8, got {image_size}")
    if substeps < 1:
      raise ValueError(f"substeps must be >= 1, got {substeps}")
    solver_iterations = spec.solver_iterations if solver_iterations is None else solver_iterations
    if int(solver_iterations) != solver_iterations or solver_iterations < 1:
      raise ValueError(f"solver_iterations must be an int >= 1, got {solver_iterations!r}")
    if control not in CONTROL_MODES:
      raise ValueError(f"control must be one of {CONTROL_MODES}, got {control!r}")
    if physics not in PHYSICS_BACKENDS:
      raise ValueError(f"physics must be one of {PHYSICS_BACKENDS}, got {physics!r}")
    self.control = control
    self.physics = physics
    self.spec = spec
    self.name = spec.name
    self.image_size = image_size
    self.render_images = render
    self.render_depth = bool(depth)
    self.render_segmentation = bool(segmentation)
    if (depth or segmentation) and not render:
      raise ValueError("depth / segmentation need render=True")
    self.substeps = substeps
    self.eval_seed = eval_seed
    self.max_episode_steps = max_episode_steps or spec.max_episode_steps
    self.instructions = tuple(t.instruction for t in spec.tasks)
    self.num_tasks = len(spec.tasks)
    xml, self.num_contact_pairs = scene.build(
        spec.bodies, spec.rules, cameras=[AGENTVIEW], model_name=spec.name,
        option=dict(timestep=f"{self.control_dt / substeps:.6g}",
                    iterations=str(int(solver_iterations))),
        arm_motors=control == "torque")
    self.xml = xml
    self.mj_model = mujoco.MjModel.from_xml_string(xml)
    # the process's own device: MJX's default, jax.devices()[0], belongs to process 0 on a pod
    self.mjx_model = mjx.put_model(self.mj_model, device=jax.local_devices()[0])
    self._arm_force = jnp.asarray(self.mj_model.actuator_ctrlrange[:N_ARM, 1], jnp.float32)
    self._c = (physics_c.CPhysics(self.mj_model, substeps, control,
                                  self.mj_model.actuator_ctrlrange[:N_ARM, 1])
               if physics == "c" else None)
    # Per-world programs that every call site shares: a jitted function is traced once per
    # process and its jaxpr reused by reset, step, and each compiled program that holds them
    # (rollout, evaluation, collection). MJX traced inline under vmap cost ~6 s per site.
    self._forward = jax.jit(self._forward_impl)
    self._observe = jax.jit(self._observe_impl, static_argnames="render")
    self._privileged = jax.jit(self._privileged_impl)
    self._index()
    self._tables()
    self.cameras = ("agentview", "wrist")
    self._camera_ids = {c: self.mj_model.camera(c).id for c in self.cameras}
    if render:
      from envs import render as render_lib  # pylint: disable=import-outside-toplevel
      self._render_lib = render_lib
      self.render_model = render_lib.render_model(self.mj_model)

  # ---------------------------------------------------------------- indexing
  def _index(self):
    m = self.mj_model
    sp = self.spec
    self.tcp_site = m.site("tcp").id
    ents = [Entity("table", "table"), Entity("left_pad", ""), Entity("right_pad", "")]
    ents += list(sp.objects) + list(sp.fixtures)
    self.entities = tuple(ents)
    self.entity_index = {e.name: i for i, e in enumerate(ents)}
    self.num_objects = len(sp.objects)
    E = len(ents)
    first = predicates.RIGHT_PAD + 1  # table, pads, then the free objects
    self.ent_movable = np.zeros(E, bool)
    self.ent_movable[first:first + self.num_objects] = True
    self.ent_body = np.array([m.body(e.body).id if e.body else 0 for e in ents], np.int32)
    self.pad_geoms = np.array([m.geom("left_pad").id, m.geom("right_pad").id], np.int32)
    self.ent_top = np.array([e.top for e in ents], np.float32)
    reg_c = np.zeros((E, 3), np.float32)
    reg_h = np.full((E, 3), -1.0, np.float32)  # negative: no region, IN never holds
    grasp = np.zeros((E, 4), np.float32)
    for i, e in enumerate(ents):
      if e.region is not None:
        reg_c[i], reg_h[i] = e.region
      if e.grasp is not None:
        grasp[i] = e.grasp
    self.region_offset, self.region_half, self.ent_grasp = reg_c, reg_h, grasp
    # geom -> entity (a body's geoms belong to the nearest entity body above it)
    body_ent = np.full(m.nbody, E, np.int32)
    for i, e in enumerate(ents):
      if e.body:
        body_ent[m.body(e.body).id] = i
    for b in range(1, m.nbody):  # bodies are ordered parents first
      if body_ent[b] == E and body_ent[m.body_parentid[b]] != E and m.body_parentid[b] != 0:
        body_ent[b] = body_ent[m.body_parentid[b]]
    geom_ent = body_ent[m.geom_bodyid].copy()
    geom_ent[self.pad_geoms[0]] = predicates.LEFT_PAD
    geom_ent[self.pad_geoms[1]] = predicates.RIGHT_PAD
    self.geom_entity = geom_ent
    # free joints of objects, articulated joints
    self.obj_qadr = np.array([m.jnt_qposadr[m.body(o.body).jntadr[0]] for o in sp.objects], np.int32)
    self.obj_dadr = np.array([m.jnt_dofadr[m.body(o.body).jntadr[0]] for o in sp.objects], np.int32)
    self.art_index = {a.name: i for i, a in enumerate(sp.articulations)}
    jids = [m.joint(a.joint).id for a in sp.articulations]
    self.art_qadr = np.array([m.jnt_qposadr[j] for j in jids], np.int32)
    self.art_range = np.array([m.jnt_range[j] for j in jids], np.float32).reshape(-1, 2)
    self.art_handle = np.array([self.entity_index[a.handle] for a in sp.articulations], np.int32)
    self.art_is_hinge = np.array([a.kind == "hinge" for a in sp.articulations], bool)
    self.art_jid = np.array(jids, np.int32)

  def _tables(self):
    """Per-task arrays: layouts [T, N, 4], noise [T, N, 3], joints [T, J], goals [T, S, 3]."""
    sp = self.spec
    T, N, J = self.num_tasks, self.num_objects, len(sp.articulations)
    S = max(len(t.goals) for t in sp.tasks)
    layout = np.zeros((T, N, 4), np.float32)
    noise = np.zeros((T, N, 3), np.float32)
    joints = np.zeros((T, J), np.float32)
    goals = np.zeros((T, S, 3), np.int32)
    names = [o.name for o in sp.objects]
    for t, task in enumerate(sp.tasks):
      for i, o in enumerate(sp.objects):
        if o.name in task.layout:
          layout[t, i] = task.layout[o.name]
          noise[t, i] = task.noise.get(o.name, sp.default_noise)
        else:
          layout[t, i] = (PARK_X + 0.25 * i, 0.0, -o.grasp[3] if o.grasp else 0.05, 0.0)
      for k in task.layout:
        if k not in names:
          raise ValueError(f"{sp.name} task {t}: unknown object {k!r} in layout")
      for name, v in task.joints.items():
        joints[t, self.art_index[name]] = v
      for s, (kind, a, b) in enumerate(task.goals):
        lookup = self.art_index if kind in (predicates.OPEN, predicates.CLOSE,
                                            predicates.TURNON) else self.entity_index
        goals[t, s] = (kind, lookup[a], self.entity_index[b] if b else 0)
    self.task_layout, self.task_noise = jnp.asarray(layout), jnp.asarray(noise)
    self.task_joints, self.task_goals = jnp.asarray(joints), jnp.asarray(goals)
    self.num_stages = jnp.asarray([len(t.goals) for t in sp.tasks], jnp.int32)

  # ------------------------------------------------------------------ physics
  def _init_data(self, key: jax.Array, task_id: jax.Array) -> mjx.Data:
    m = self.mjx_model
    qpos = jnp.asarray(self.mj_model.qpos0)
    qpos = qpos.at[:7].set(jnp.asarray(control.HOME_QPOS)).at[7:9].set(control.FINGER_OPEN)
    lay, noi = self.task_layout[task_id], self.task_noise[task_id]
    u = jax.random.uniform(key, (self.num_objects, 3), minval=-1.0, maxval=1.0)
    xy = lay[:, :2] + u[:, :2] * noi[:, :2]
    yaw = lay[:, 3] + u[:, 2] * noi[:, 2]
    quat = jnp.stack([jnp.cos(yaw / 2), jnp.zeros_like(yaw), jnp.zeros_like(yaw),
                      jnp.sin(yaw / 2)], -1)
    pose = jnp.concatenate([xy, lay[:, 2:3], quat], -1)  # [N, 7]
    idx = self.obj_qadr[:, None] + np.arange(7)[None]
    qpos = qpos.at[idx].set(pose)
    if len(self.art_qadr):
      qpos = qpos.at[self.art_qadr].set(self.task_joints[task_id])
    arm = jnp.zeros(7) if self.control == "torque" else jnp.asarray(control.HOME_QPOS)
    ctrl = jnp.concatenate([arm, jnp.full((2,), control.FINGER_OPEN)])
    forward = self._c.forward if self._c is not None else self._forward
    return forward(mjx.make_data(m).replace(qpos=qpos, ctrl=ctrl))

  def _forward_impl(self, d: mjx.Data) -> mjx.Data:
    return mjx.forward(self.mjx_model, d)

  def _mjx_step(self, d: mjx.Data) -> mjx.Data:
    """``mjx.step`` (forward, then the model's integrator) with the shared forward."""
    m = self.mjx_model
    d = self._forward(d)
    integrators = {mujoco.mjtIntegrator.mjINT_EULER: mjx_forward.euler,
                   mujoco.mjtIntegrator.mjINT_RK4: mjx_forward.rungekutta4,
                   mujoco.mjtIntegrator.mjINT_IMPLICITFAST: mjx_forward.implicit}
    return integrators[mujoco.mjtIntegrator(self.mj_model.opt.integrator)](m, d)

  def _physics(self, d: mjx.Data, target: jax.Array) -> mjx.Data:
    """One control step of physics towards joint targets [9] (7 arm joints, 2 fingers)."""
    if self._c is not None:
      return self._c.step(d, target)
    m = self.mjx_model
    if self.control == "servo":
      d = d.replace(ctrl=target)
      d, _ = jax.lax.scan(lambda d, _: (self._mjx_step(d), None), d, None, length=self.substeps)
      return d

    def substep(d, _):
      tau = control.computed_torque(m, d, target[:7], self._arm_force)
      return self._mjx_step(d.replace(ctrl=jnp.concatenate([tau, target[7:]]))), None
    d, _ = jax.lax.scan(substep, d, None, length=self.substeps)
    return d

  def privileged(self, d: mjx.Data) -> dict[str, jax.Array]:
    """Poses, joint values and contacts (the physics interface's outputs)."""
    return self._privileged(d)

  def _privileged_impl(self, d: mjx.Data) -> dict[str, jax.Array]:
    E = len(self.entities)
    ent_pos = d.xpos[self.ent_body].at[1:3].set(d.geom_xpos[self.pad_geoms])
    ent_mat = d.xmat[self.ent_body].at[1:3].set(d.geom_xmat[self.pad_geoms])
    c = d._impl.contact  # pylint: disable=protected-access
    ge = jnp.asarray(self.geom_entity)
    e1, e2 = ge[c.geom1], ge[c.geom2]
    active = (c.dist < 2e-3).astype(jnp.float32)
    touch = jnp.zeros((E + 1, E + 1)).at[e1, e2].max(active).at[e2, e1].max(active)
    tcp_pos, tcp_mat = control.tcp_pose(d, self.tcp_site)
    return dict(
        ent_pos=ent_pos, ent_mat=ent_mat,
        target_pos=ent_pos + jnp.einsum("eij,ej->ei", ent_mat, self.ent_top),
        region_centre=ent_pos + jnp.einsum("eij,ej->ei", ent_mat, self.region_offset),
        region_half=jnp.asarray(self.region_half), ent_grasp=jnp.asarray(self.ent_grasp),
        ent_movable=jnp.asarray(self.ent_movable),
        touch=touch[:E, :E] > 0,
        joint_q=d.qpos[self.art_qadr], joint_range=jnp.asarray(self.art_range),
        joint_anchor=d.xanchor[self.art_jid], joint_axis=d.xaxis[self.art_jid],
        art_handle=jnp.asarray(self.art_handle), art_is_hinge=jnp.asarray(self.art_is_hinge),
        tcp_pos=tcp_pos, tcp_mat=tcp_mat, fingers=d.qpos[7:9])

  # ------------------------------------------------------------ observations
  def observe(self, d: mjx.Data, task_id: jax.Array, render: bool = True) -> dict[str, jax.Array]:
    """Proprio [8], task id and (when the suite renders and ``render``) both cameras."""
    return self._observe(d, task_id, render=render)

  def _observe_impl(self, d: mjx.Data, task_id: jax.Array, render: bool) -> dict[str, jax.Array]:
    pos, mat = control.tcp_pose(d, self.tcp_site)
    obs = dict(proprio=jnp.concatenate([pos, control.rotvec(mat), d.qpos[7:9]]).astype(jnp.float32),
               task_id=task_id.astype(jnp.int32))
    if self.render_images and render:
      size = self.image_size
      r = self._render_lib
      for cam in self.cameras:
        out = r.render_camera(self.render_model, d, self._camera_ids[cam], height=size,
                              width=size, depth=self.render_depth,
                              segmentation=self.render_segmentation)
        obs[cam] = out["rgb"]
        if self.render_depth:
          obs[f"{cam}_depth"] = out["depth"]
        if self.render_segmentation:
          obs[f"{cam}_segmentation"] = out["segmentation"]
    return obs

  # --------------------------------------------------------------- env API
  def reset(self, key: jax.Array, task_id: jax.Array | None = None) -> State:
    """One world. ``task_id`` None: drawn uniformly from the suite's tasks."""
    k_task, k_init, k_next = jax.random.split(key, 3)
    if task_id is None:
      task_id = jax.random.randint(k_task, (), 0, self.num_tasks)
    task_id = jnp.asarray(task_id, jnp.int32)
    d = self._init_data(k_init, task_id)
    return self._state(d, task_id, k_next)

  def eval_key(self, task_id: int, index: int) -> jax.Array:
    """Key of fixed evaluation initial state ``index`` (0..49) of ``task_id``."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.eval_seed), task_id), index)

  def reset_eval(self, task_id: jax.Array, index: jax.Array) -> State:
    """The fixed, seeded evaluation initial state ``index`` of ``task_id``."""
    return self.reset(self.eval_key(task_id, index), task_id)

  def _state(self, d, task_id, rng) -> State:
    priv = self.privileged(d)
    stages = predicates.all_satisfied(priv, self.task_goals[task_id])
    zero = jnp.float32(0.0)
    info = dict(task_id=task_id, step=jnp.int32(0), rng=rng, priv=priv,
                stages=stages, success=zero)
    metrics = dict(dense_reward=zero, nonfinite_action=zero, nonfinite_physics=zero)
    return State(data=d, obs=self.observe(d, task_id), reward=zero, done=zero,
                 metrics=metrics, info=info)

  def step(self, state: State, action: jax.Array, render: bool = True) -> State:
    """One 20 Hz control step. ``render=False`` leaves the previous images in
    ``obs`` (for steps inside an open-loop action chunk, see ``step_chunk``)."""
    action, bad_action = control.sanitize(jnp.asarray(action, jnp.float32))
    d0 = state.data
    ctrl = control.joint_targets(self.mjx_model, d0, action, self.tcp_site)
    d = self._physics(d0, ctrl)
    finite = jnp.all(jnp.isfinite(d.qpos)) & jnp.all(jnp.isfinite(d.qvel))
    finite &= jnp.all(jnp.abs(d.xpos) < SANE_BOX)  # bodies flung out of the room blew up too
    # A world that blew up keeps its last finite state and ends its episode;
    # AutoReset then starts it afresh. Other worlds are untouched.
    d = jax.tree.map(lambda new, old: jnp.where(finite, new, old), d, d0)
    task_id = state.info["task_id"]
    priv = self.privileged(d)
    goals = self.task_goals[task_id]
    stages = predicates.all_satisfied(priv, goals)
    success = jnp.all(stages).astype(jnp.float32)
    step = state.info["step"] + 1
    done = jnp.maximum(success, (step >= self.max_episode_steps).astype(jnp.float32))
    done = jnp.maximum(done, 1.0 - finite.astype(jnp.float32))
    dense = experts.dense_reward(priv, goals, stages)
    info = dict(state.info, step=step, priv=priv, stages=stages, success=success)
    metrics = dict(dense_reward=dense, nonfinite_action=bad_action,
                   nonfinite_physics=1.0 - finite.astype(jnp.float32))
    obs = self.observe(d, task_id, render)
    if not render:
      obs = {**state.obs, **obs}
    return State(data=d, obs=obs, reward=success, done=done, metrics=metrics, info=info)

  def step_chunk(self, state: State, actions: jax.Array) -> tuple[State, jax.Array]:
    """Executes an action chunk ``actions [K, 7]`` open-loop, rendering only after it.

    The chunk stops at the end of the episode: steps after ``done`` leave the
    world as it was. Returns the state after the chunk (its ``reward``/``done``
    summarise the chunk: done if the episode ended inside it; its ``metrics``
    are sums over the steps that ran) and ``executed [K]`` (1.0 for steps taken
    before the episode ended), with which the trainer masks the tokens of steps
    that never ran.
    """
    def body(carry, a):
      s, ended, sums = carry
      nxt = self.step(s, a, render=False)
      run = 1.0 - ended.astype(jnp.float32)
      sums = {n: sums[n] + run * v for n, v in nxt.metrics.items()}
      s = jax.tree.map(lambda new, old: jnp.where(ended, old, new), nxt, s)
      return (s, ended | (nxt.done > 0), sums), run

    start = state.replace(done=jnp.zeros_like(state.done))
    zeros = {n: jnp.zeros_like(v) for n, v in state.metrics.items()}
    (s, _, sums), executed = jax.lax.scan(body, (start, jnp.asarray(False), zeros), actions)
    obs = {**s.obs, **self.observe(s.data, s.info["task_id"])}
    return s.replace(obs=obs, metrics=sums), executed

  def expert_action(self, state: State) -> jax.Array:
    """The scripted feedback expert's action [7] for this world's state."""
    goals = self.task_goals[state.info["task_id"]]
    return experts.act(state.info["priv"], goals, state.info["stages"])
