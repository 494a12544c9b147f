"""LIBERO-Object and LIBERO-Goal: instructions, limits, articulated-joint
predicates on real physics states, and the scripted expert solving the tasks."""
import copy
import pathlib

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

import envs
from envs import predicates as P
from envs.expert_eval import expert_success, task_state_grid

OBJECT_ITEMS = ("alphabet soup", "cream cheese", "salad dressing", "bbq sauce", "ketchup",
                "tomato sauce", "butter", "milk", "chocolate pudding", "orange juice")
GOAL_INSTRUCTIONS = (
    "open the middle drawer of the cabinet", "put the bowl on the stove",
    "put the wine bottle on top of the cabinet", "open the top drawer and put the bowl inside",
    "put the bowl on top of the cabinet", "push the plate to the front of the stove",
    "put the cream cheese in the bowl", "turn on the stove", "put the bowl on the plate",
    "put the wine bottle on the rack",
)


@pytest.fixture(scope="session")
def object_blind():
  return envs.make("libero_object", render=False)


@pytest.fixture(scope="session")
def goal_blind():
  return envs.make("libero_goal", render=False)


def test_object_suite_matches_libero(object_blind):
  env = object_blind
  assert env.instructions == tuple(f"pick up the {x} and place it in the basket"
                                   for x in OBJECT_ITEMS)
  assert env.max_episode_steps == 280 and env.num_tasks == 10
  assert env.num_contact_pairs <= 42
  # each scene: the basket, the target and five distractors on the table
  on_table = np.asarray(env.task_layout[:, :, 0]) < 1.0
  assert on_table.sum(1).tolist() == [6] * 10
  assert all(on_table[t, t] for t in range(10))


def test_goal_suite_matches_libero(goal_blind):
  env = goal_blind
  assert env.instructions == GOAL_INSTRUCTIONS
  assert env.max_episode_steps == 300 and env.num_tasks == 10
  assert env.num_contact_pairs <= 30
  # one shared scene: every task starts from the same layout
  lay = np.asarray(env.task_layout)
  assert np.all(lay == lay[:1])


def _with_joints(env, state, values):
  """The state's physics with one articulated joint set: ``values`` {name: q}."""
  (name, q), = values.items()
  return _set_joint(env)(state.data, env.art_qadr[env.art_index[name]], q)


_SET_JOINT = {}


def _set_joint(env):
  if env not in _SET_JOINT:
    _SET_JOINT[env] = jax.jit(lambda d, adr, q: env.privileged(
        mjx.forward(env.mjx_model, d.replace(qpos=d.qpos.at[adr].set(q)))))
  return _SET_JOINT[env]


def test_goal_joint_predicates_on_physics_states(goal_blind):
  """Drawer open / closed and knob on, read from joints set in the MJX model."""
  env = goal_blind
  s = jax.jit(env.reset_eval)(0, 0)
  middle, knob = "wooden_cabinet_middle_drawer", "flat_stove_knob"

  def sat(priv, kind, name):
    return bool(P.satisfied(priv, jnp.array([kind, env.art_index[name], 0])))

  opened = _with_joints(env, s, {middle: 0.15})
  closed = _with_joints(env, s, {middle: 0.01})
  half = _with_joints(env, s, {middle: 0.08})
  assert sat(opened, P.OPEN, middle) and not sat(opened, P.CLOSE, middle)
  assert sat(closed, P.CLOSE, middle) and not sat(closed, P.OPEN, middle)
  assert not sat(half, P.OPEN, middle) and not sat(half, P.CLOSE, middle)
  # the drawer body really moved toward the robot (-x) with its joint
  e = env.entity_index[middle]
  assert float(opened["ent_pos"][e, 0] - closed["ent_pos"][e, 0]) == pytest.approx(-0.14, abs=1e-4)
  on = _with_joints(env, s, {knob: 1.2})
  off = _with_joints(env, s, {knob: 0.3})
  assert sat(on, P.TURNON, knob) and not sat(off, P.TURNON, knob)
  assert not sat(s.info["priv"], P.TURNON, knob)
  # task 3's first stage (open the top drawer) is not done at reset
  assert not bool(s.info["stages"].all()) and env.num_stages[3] == 2


def _replay_push(env, iterations):
  """Max plate tilt (degrees) per world over the recorded push (scripts/goal_push_fixture.py),
  replayed open loop in the C engine with ``iterations`` Newton iterations."""
  rec = np.load(pathlib.Path(__file__).parent / "assets" / "goal_push.npz")
  m = copy.deepcopy(env.mj_model)
  m.opt.iterations = iterations
  d = mujoco.MjData(m)
  plate = env.ent_body[env.entity_index["plate"]]
  assert rec["qpos"].shape[1] == m.nq and rec["ctrl"].shape[2] == m.nu, \
      "the goal scene changed: run scripts/goal_push_fixture.py"
  tilts = []
  for qpos, qvel, ctrls in zip(rec["qpos"], rec["qvel"], rec["ctrl"]):
    d.qpos[:], d.qvel[:] = qpos, qvel
    mujoco.mj_forward(m, d)
    tilt = 0.0
    for c in ctrls:
      d.ctrl[:] = c
      mujoco.mj_step(m, d)
      tilt = max(tilt, np.degrees(np.arccos(np.clip(d.xmat[plate][8], -1.0, 1.0))))
    tilts.append(tilt)
  return np.array(tilts)


def test_goal_push_solver_converges(goal_blind):
  """The pads' first pushes on the plate (task 5, all 50 evaluation states): with MuJoCo's 4
  Newton iterations the unconverged solver threw the plate up and flipped it (a fifth of the
  expert's pushes failed so); the goal suite's iterations keep it flat, as 50 iterations do."""
  assert goal_blind.mj_model.opt.iterations == goal_blind.spec.solver_iterations == 8
  loose = _replay_push(goal_blind, 4)
  tilt = _replay_push(goal_blind, goal_blind.spec.solver_iterations)
  converged = _replay_push(goal_blind, 50)
  assert (loose > 30).sum() >= 10, np.round(loose)
  assert tilt.max() < 10, np.round(tilt)
  np.testing.assert_allclose(tilt, converged, atol=1.0)


def _all_tasks(env, n, opts=None):
  return expert_success(env, *task_state_grid(env.num_tasks, n), compiler_options=opts).reshape(-1, n)


@pytest.mark.ci_full
def test_expert_solves_every_object_task(object_blind, run_bound):
  succ = _all_tasks(object_blind, 2, run_bound)
  assert succ.min(1).min() == 1.0, succ.mean(1)


@pytest.mark.ci_full
def test_expert_solves_every_goal_task(goal_blind, run_bound):
  succ = _all_tasks(goal_blind, 2, run_bound)
  # 99.4% on all 50 states per task (session 7); one failure in these 20 worlds is tolerated
  assert succ.mean(1).min() >= 0.5 and succ.mean() >= 0.95, succ.mean(1)


LONG_INSTRUCTIONS = (
    "put both the alphabet soup and the tomato sauce in the basket",
    "put both the cream cheese box and the butter in the basket",
    "turn on the stove and put the moka pot on it",
    "put the black bowl in the bottom drawer of the cabinet and close it",
    "put the white mug on the left plate and put the yellow and white mug on the right plate",
    "pick up the book and place it in the back compartment of the caddy",
    "put the white mug on the plate and put the chocolate pudding to the right of the plate",
    "put both the alphabet soup and the cream cheese box in the basket",
    "put both moka pots on the stove",
    "put the yellow and white mug in the microwave and close it",
)


@pytest.fixture(scope="session")
def long_blind():
  return envs.make("libero_10", render=False)


def test_long_suite_matches_libero(long_blind):
  env = long_blind
  assert env.instructions == LONG_INSTRUCTIONS
  assert env.max_episode_steps == 520 and env.num_tasks == 10
  assert env.num_contact_pairs <= 64
  # two-stage tasks, except the book (one placement)
  assert np.asarray(env.num_stages).tolist() == [2, 2, 2, 2, 2, 1, 2, 2, 2, 2]
  s = jax.jit(jax.vmap(env.reset_eval))(jnp.arange(10), jnp.zeros(10, jnp.int32))
  assert not np.asarray(s.info["stages"]).all(1).any()  # nothing is done at reset


def test_expert_solves_long_quick(long_blind, run_bound):
  """Two scenes: two items into a basket; the book into the caddy (both tasks solved on
  states 0-3 in a 40-world sweep). Which other worlds fail moves with float rounding: the
  sweep gave 29/40 and 30/40 with two rotvec formulas equal to 5e-7, failing different worlds
  (see the slow test below)."""
  succ = expert_success(long_blind, np.array([1, 5]), np.array([0, 0]), compiler_options=run_bound)
  assert succ.tolist() == [1.0, 1.0]


@pytest.mark.slow  # ~4 min; the quick test runs in CI
def test_expert_solves_long_tasks(long_blind, run_bound):
  """All ten LIBERO-10 tasks x 4 states. The experts are not yet at the 95% target (33/40 in
  the session-4 sweep; failing: a bowl thrown out as its drawer closes, a box flung by a closing
  grasp, the moka pots, the microwave); this guards the level."""
  succ = _all_tasks(long_blind, 4, run_bound)
  assert succ.mean() >= 0.75, succ.mean(1)
