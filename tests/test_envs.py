"""Environment API, determinism, robustness, control and physics fidelity."""
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

import envs
from envs import control
from envs.core import AutoReset, BatchEnv


def test_registry_and_config_errors():
  assert "libero_spatial" in envs.registered()
  with pytest.raises(ValueError, match="unknown environment"):
    envs.make("libero_nonexistent")
  with pytest.raises(ValueError, match="image_size"):
    envs.make("libero_spatial", image_size=2)


def test_spatial_suite_matches_libero(spatial):
  assert spatial.num_tasks == 10
  assert spatial.max_episode_steps == 220
  assert spatial.instructions[0] == (
      "pick up the black bowl between the plate and the ramekin and place it on the plate")
  assert spatial.instructions[9] == (
      "pick up the black bowl on the wooden cabinet and place it on the plate")


def test_batched_shapes_and_dtypes(batch_fns):
  env, reset, step = batch_fns
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  s = reset(keys, jnp.array([0, 3]))
  assert s.obs["agentview"].shape == (2, 64, 64, 3) and s.obs["agentview"].dtype == jnp.uint8
  assert s.obs["wrist"].shape == (2, 64, 64, 3) and s.obs["wrist"].dtype == jnp.uint8
  assert s.obs["proprio"].shape == (2, 8) and s.obs["proprio"].dtype == jnp.float32
  assert s.obs["task_id"].tolist() == [0, 3]
  s = step(s, jnp.zeros((2, 7)))
  assert s.reward.shape == (2,) and s.done.shape == (2,)
  assert s.info["step"].tolist() == [1, 1]
  for v in s.metrics.values():
    assert v.shape == (2,)
  # the image is not blank: several distinct colours from the scene
  assert len(np.unique(np.asarray(s.obs["agentview"][0]).reshape(-1, 3), axis=0)) > 20


def test_same_key_same_rollout(batch_fns):
  env, reset, step = batch_fns

  def run(seed):
    keys = jax.random.split(jax.random.PRNGKey(seed), 2)
    s = reset(keys)
    for i in range(3):
      a = jax.random.uniform(jax.random.PRNGKey(100 + i), (2, 7), minval=-1, maxval=1)
      s = step(s, a)
    return s

  a, b, c = run(1), run(1), run(2)
  np.testing.assert_array_equal(np.asarray(a.data.qpos), np.asarray(b.data.qpos))
  np.testing.assert_array_equal(np.asarray(a.obs["agentview"]), np.asarray(b.obs["agentview"]))
  assert not np.allclose(np.asarray(a.data.qpos), np.asarray(c.data.qpos))


def test_eval_initial_states_are_fixed_and_distinct(blind_fns):
  _, reset_eval, _ = blind_fns
  a, b, c = reset_eval(4, 7), reset_eval(4, 7), reset_eval(4, 8)
  np.testing.assert_array_equal(np.asarray(a.data.qpos), np.asarray(b.data.qpos))
  assert not np.allclose(np.asarray(a.data.qpos), np.asarray(c.data.qpos))
  assert int(a.info["task_id"]) == 4


def test_nonfinite_action_is_zeroed_and_counted(blind_fns):
  reset, _, step = blind_fns
  s = reset(jax.random.PRNGKey(0), 1)
  bad = step(s, jnp.array([jnp.nan, 0, 0, 0, jnp.inf, 0, 0], jnp.float32))
  zero = step(s, jnp.zeros(7))
  assert float(bad.metrics["nonfinite_action"]) == 1.0
  assert float(zero.metrics["nonfinite_action"]) == 0.0
  np.testing.assert_allclose(np.asarray(bad.data.qpos), np.asarray(zero.data.qpos), atol=1e-6)


def test_diverged_world_is_reset_and_counted_alone(spatial_blind, blind_fns):
  env = AutoReset(BatchEnv(spatial_blind))
  keys = jax.random.split(jax.random.PRNGKey(3), 2)
  s = jax.jit(env.reset)(keys, jnp.array([2, 2]))
  step = jax.jit(env.step)
  s = step(s, jnp.zeros((2, 7)))
  healthy = jax.tree.map(lambda x: x[1], s)
  qvel = s.data.qvel.at[0].set(jnp.nan)
  s_bad = s.replace(data=s.data.replace(qvel=qvel))
  nxt = step(s_bad, jnp.zeros((2, 7)))
  assert nxt.done.tolist() == [1.0, 0.0]
  assert nxt.metrics["nonfinite_physics"].tolist() == [1.0, 0.0]
  assert int(nxt.info["step"][0]) == 0  # world 0 started a fresh episode
  assert np.all(np.isfinite(np.asarray(nxt.data.qpos)))
  # world 1 is exactly what stepping it alone gives
  alone = blind_fns[2](healthy, jnp.zeros(7))
  np.testing.assert_allclose(np.asarray(nxt.data.qpos[1]), np.asarray(alone.data.qpos), atol=1e-6)


def test_world_flung_out_of_the_room_counts_as_blown_up(spatial_blind, blind_fns):
  """Finite but absurd coordinates (a body 40 m away) end the episode like NaNs do."""
  reset, _, step = blind_fns
  s = reset(jax.random.PRNGKey(0), 3)
  adr = int(spatial_blind.obj_qadr[0])
  nxt = step(s.replace(data=s.data.replace(qpos=s.data.qpos.at[adr].set(40.0))), jnp.zeros(7))
  assert float(nxt.metrics["nonfinite_physics"]) == 1.0 and float(nxt.done) == 1.0
  ok = step(s, jnp.zeros(7))
  assert float(ok.metrics["nonfinite_physics"]) == 0.0 and float(ok.done) == 0.0


def test_end_effector_control_follows_command(blind_fns):
  reset, _, step = blind_fns
  s = reset(jax.random.PRNGKey(0), 2)
  p0 = np.asarray(s.info["priv"]["tcp_pos"])
  for _ in range(4):
    s = step(s, jnp.array([1.0, 0, 0, 0, 0, 0, -1]))
  p1 = np.asarray(s.info["priv"]["tcp_pos"])
  dx = p1 - p0
  assert 0.1 < dx[0] < 0.25, dx  # 4 steps x 5 cm, with servo lag
  assert abs(dx[1]) < 0.02, dx
  # a yaw command turns the hand about the world z axis
  r0 = np.asarray(s.info["priv"]["tcp_mat"])
  for _ in range(3):
    s = step(s, jnp.array([0, 0, 0, 0, 0, 0.5, -1.0]))
  r1 = np.asarray(s.info["priv"]["tcp_mat"])
  rel = r1 @ r0.T
  yaw = np.arctan2(rel[1, 0], rel[0, 0])
  assert 0.1 < yaw < 0.9, yaw  # 0.75 rad commanded; the wrist servo lags (see the xfail below)
  # the gripper command closes the fingers
  for _ in range(8):
    s = step(s, jnp.array([0, 0, 0, 0, 0, 0, 1.0]))
  assert np.all(np.asarray(s.info["priv"]["fingers"]) < 0.005)


@pytest.mark.xfail(strict=True, reason="known defect of control='servo': the joints have "
                   "different time constants, so within a 50 ms step they follow a curved path and "
                   "a pure +x command also lifts the TCP by ~1.7 cm per step; control='torque' "
                   "fixes it (the test below)")
def test_servo_cartesian_command_does_not_drift_in_z():
  env = envs.make("libero_spatial", render=False, control="servo")
  _assert_straight_cartesian_motion(jax.jit(env.reset), jax.jit(env.step))


def test_torque_cartesian_command_is_straight(spatial_blind, blind_fns):
  """Computed torque (the default law): every joint converges with the same time constant, so
  a translation stays a translation and a yaw stays a yaw (the servo's cross-axis drift is ~10x
  larger)."""
  assert spatial_blind.control == "torque"
  _assert_straight_cartesian_motion(blind_fns[0], blind_fns[2])


def _assert_straight_cartesian_motion(reset, step):
  s = reset(jax.random.PRNGKey(0), 2)
  p0 = np.asarray(s.info["priv"]["tcp_pos"])
  for _ in range(4):
    s = step(s, jnp.array([1.0, 0, 0, 0, 0, 0, -1]))
  p1 = np.asarray(s.info["priv"]["tcp_pos"])
  assert 0.1 < p1[0] - p0[0] < 0.21, p1 - p0      # 4 x 5 cm commanded
  assert np.all(np.abs((p1 - p0)[1:]) < 0.01), p1 - p0
  r0 = np.asarray(s.info["priv"]["tcp_mat"])
  for _ in range(3):
    s = step(s, jnp.array([0, 0, 0, 0, 0, 0.5, -1.0]))
  p2, r1 = np.asarray(s.info["priv"]["tcp_pos"]), np.asarray(s.info["priv"]["tcp_mat"])
  rel = r1 @ r0.T
  assert 0.3 < np.arctan2(rel[1, 0], rel[0, 0]) < 0.8                 # 0.75 rad commanded
  assert np.linalg.norm(p2 - p1) < 0.015, p2 - p1                     # a yaw does not translate
  for _ in range(8):                                                   # the fingers still close
    s = step(s, jnp.array([0, 0, 0, 0, 0, 0, 1.0]))
  assert np.all(np.asarray(s.info["priv"]["fingers"]) < 0.005)


def test_unknown_control_mode_is_refused():
  with pytest.raises(ValueError, match="control must be one of"):
    envs.make("libero_spatial", render=False, control="velocity")


def test_mjx_matches_c_engine(spatial_blind, blind_fns):
  """Same MJCF, same controls: MJX and mujoco.mj_step agree over 40 physics steps."""
  env = spatial_blind
  m = env.mj_model
  s = blind_fns[1](0, 0)
  d = mujoco.MjData(m)
  d.qpos[:] = np.asarray(s.data.qpos)
  d.ctrl[:] = np.asarray(s.data.ctrl)
  mujoco.mj_forward(m, d)
  # the arm's actuators are torque motors (N m) under the default law, position servos (rad)
  # under "servo"; the fingers are servos under both
  arm = (np.array([6.0, -4.0, 3.0, 5.0, 1.0, -1.0, 0.5]) if env.control == "torque"
         else np.asarray(control.HOME_QPOS) + np.array([0.2, 0.1, 0, -0.15, 0, 0.1, 0.3]))
  ctrl = np.concatenate([arm, [0.03, 0.03]])
  d.ctrl[:] = ctrl
  dx = s.data.replace(ctrl=jnp.asarray(ctrl, jnp.float32))
  mstep = jax.jit(lambda d: jax.lax.fori_loop(0, 40, lambda i, d: mjx.step(env.mjx_model, d), d))
  dx = mstep(dx)
  for _ in range(40):
    mujoco.mj_step(m, d)
  np.testing.assert_allclose(np.asarray(dx.qpos[:9]), d.qpos[:9], atol=2e-3)
  obj = env.obj_qadr[0]
  np.testing.assert_allclose(np.asarray(dx.qpos[obj:obj + 3]), d.qpos[obj:obj + 3], atol=2e-3)
  # and the arm actually moved
  assert np.abs(d.qpos[:7] - np.asarray(control.HOME_QPOS)).max() > 0.05


def test_step_chunk_matches_single_steps_and_stops_at_done(spatial, batch_fns):
  env, reset, step = batch_fns
  keys = jax.random.split(jax.random.PRNGKey(3), 2)
  s0 = reset(keys, jnp.array([1, 5]))
  acts = jax.random.uniform(jax.random.PRNGKey(4), (2, 3, 7), minval=-1, maxval=1)
  step_chunk = jax.jit(env.step_chunk)
  chunk, executed = step_chunk(s0, acts)
  s, dense = s0, 0.0
  for k in range(3):
    s = step(s, acts[:, k])
    dense = dense + s.metrics["dense_reward"]
  np.testing.assert_allclose(chunk.data.qpos, s.data.qpos, atol=1e-5)
  # The chunk's metrics are sums over its steps.
  np.testing.assert_allclose(chunk.metrics["dense_reward"], dense, rtol=1e-4, atol=1e-6)
  # The same image, up to float rounding of the pose (qpos agrees to 1e-5, not bit for bit,
  # between two compiled programs): one intensity level on at most 0.1% of the pixels.
  diff = np.abs(np.asarray(chunk.obs["agentview"], int) - np.asarray(s.obs["agentview"], int))
  assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
  assert executed.tolist() == [[1, 1, 1], [1, 1, 1]]
  # A world one step from its time limit executes one step of the chunk and stops there.
  last = s0.replace(info=dict(s0.info, step=jnp.array([spatial.max_episode_steps - 1, 0])))
  chunk, executed = step_chunk(last, acts)
  assert executed.tolist() == [[1, 0, 0], [1, 1, 1]]
  assert chunk.done.tolist() == [1.0, 0.0]
  one = step(last, acts[:, 0])
  np.testing.assert_allclose(chunk.data.qpos[0], one.data.qpos[0], atol=1e-5)


def test_rotvec_is_accurate_near_a_half_turn():
  """The proprio orientation: float32-accurate at every angle, including the few milliradians
  below pi where a downward gripper sits (the trace/arccos formula lost ~0.2 rad there)."""
  from scipy.spatial.transform import Rotation  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  f = jax.jit(control.rotvec)
  for angle in (0.0, 1e-5, 0.3, 2.0, np.pi - 0.05, np.pi - 2e-3, np.pi - 1e-4, np.pi):
    for _ in range(10):
      axis = rng.normal(size=3)
      want = Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()
      got = np.asarray(f(jnp.asarray(want + rng.normal(size=(3, 3)) * 1e-7, jnp.float32)))
      assert np.linalg.norm(got) <= np.pi + 1e-5
      err = np.abs(Rotation.from_rotvec(got.astype(np.float64)).as_matrix() - want).max()
      assert err < 2e-6, (angle, err)
