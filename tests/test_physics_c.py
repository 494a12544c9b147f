"""physics="c": the suite's physics in MuJoCo's C engine through jax.pure_callback
(envs/physics_c.py) against MJX, under jit and vmap, and with the scripted expert.

Agreement, measured on libero_spatial from the same MJX reset state over 3 control steps (15
physics steps of the computed-torque law): task 0 (the one tested), arm joints 2.4e-7 rad,
fingers 4e-9 m, free objects 1.1e-7 m, every pose the suite reads (xpos, xmat, geom, site and
camera frames) <= 4.2e-7, mass matrix 4.8e-7; qvel 1e-5 and the solver's warm start 3e-3 (both
engines stop iterating at their own tolerance). Tasks 3 and 7: arm the same, an object resting
on another support 2.9e-4 m (the two engines' contact models), so objects are checked on task 0.
The tolerance TOL_ARM = 1e-5 still fails a bandwidth of 50 instead of 60 rad/s (1.9e-2 rad after
3 steps), a dropped velocity term (damping ratio 0: 9.1e-2) and damping ratio 0.8 (1.2e-2).
"""
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import envs
from envs import control, physics_c
from envs.core import AutoReset, BatchEnv
from envs.expert_eval import expert_success

ACTIONS = np.array([[0.6, -0.4, 0.5, 0.3, -0.2, 0.4, 0.5],
                    [-0.5, 0.7, -0.3, -0.4, 0.3, -0.2, 1.0],
                    [0.3, 0.3, -0.8, 0.1, 0.5, -0.5, -1.0]], np.float32)
TOL_ARM = 1e-5     # rad
TOL_FINGER = 1e-5  # m
TOL_OBJ = 1e-5     # m


@pytest.fixture(scope="module")
def c_env():
  return envs.make("libero_spatial", render=False, physics="c")


@pytest.fixture(scope="module")
def c_fns(c_env):
  return jax.jit(c_env.reset), jax.jit(c_env.step)


def _rollout(step, s, actions=ACTIONS):
  out = []
  for a in actions:
    s = step(s, jnp.asarray(a))
    out.append(s)
  return out


def test_physics_argument_is_checked():
  with pytest.raises(ValueError, match="physics must be one of"):
    envs.make("libero_spatial", render=False, physics="warp")


def test_c_matches_mjx(spatial_blind, blind_fns, c_env, c_fns):
  reset, _, mjx_step = blind_fns
  s0 = reset(jax.random.PRNGKey(0), 0)  # one initial state (MJX's reset) for both backends
  ref = _rollout(mjx_step, s0)
  got = _rollout(c_fns[1], s0)
  q_ref = np.array([np.asarray(s.data.qpos) for s in ref])
  q_got = np.array([np.asarray(s.data.qpos) for s in got])
  assert np.abs(q_ref[-1, :7] - np.asarray(s0.data.qpos[:7])).max() > 0.05  # the arm moved
  np.testing.assert_allclose(q_got[:, :7], q_ref[:, :7], atol=TOL_ARM)
  np.testing.assert_allclose(q_got[:, 7:9], q_ref[:, 7:9], atol=TOL_FINGER)
  for adr in spatial_blind.obj_qadr:
    np.testing.assert_allclose(q_got[:, adr:adr + 3], q_ref[:, adr:adr + 3], atol=TOL_OBJ)
    np.testing.assert_allclose(q_got[:, adr + 3:adr + 7], q_ref[:, adr + 3:adr + 7], atol=1e-3)
  # what the rest of the suite reads from the data agrees too: poses, frames, mass matrix
  a, b = got[-1], ref[-1]
  for f in ("xpos", "xmat", "geom_xpos", "site_xpos", "site_xmat", "xanchor", "xaxis",
            "cam_xpos", "cam_xmat"):
    np.testing.assert_allclose(getattr(a.data, f), getattr(b.data, f), atol=1e-4, err_msg=f)
  np.testing.assert_allclose(a.data._impl.M, b.data._impl.M, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(a.obs["proprio"], b.obs["proprio"], atol=1e-4)
  np.testing.assert_array_equal(a.info["priv"]["touch"], b.info["priv"]["touch"])
  np.testing.assert_array_equal(a.info["stages"], b.info["stages"])
  assert np.asarray(a.info["priv"]["touch"]).any()  # the objects touch the table
  # unused contact slots are far away, used ones name real geoms
  c = a.data._impl.contact
  used = np.asarray(c.dist) < physics_c.FAR
  assert used.any() and np.all(np.asarray(c.geom1)[used] >= 0)

  # A changed or dropped control term breaks the agreement (the callback reads them per call).
  law = c_env._c
  for attr, value in (("bandwidth", 50.0), ("damping_ratio", 0.0)):
    keep = getattr(law, attr)
    setattr(law, attr, value)
    try:
      bad = _rollout(c_fns[1], s0)
    finally:
      setattr(law, attr, keep)
    err = np.abs(np.asarray(bad[-1].data.qpos[:7]) - q_ref[-1, :7]).max()
    assert err > 100 * TOL_ARM, (attr, err)


def test_servo_law_steps_like_mujoco_c():
  """control="servo": each control step is what ``substeps`` plain mj_step calls give from the
  same state and targets (agreement 1.1e-7 rad). Not MJX's: there the arm drifts 0.1 rad from C
  within 3 steps, with the position servos at their force limits (87 / 12 N m) -- an engine
  difference, likely implicitfast's handling of clamped actuators' damping, not the backend's."""
  env = envs.make("libero_spatial", render=False, control="servo", physics="c")
  s = jax.jit(env.reset)(jax.random.PRNGKey(0), 0)
  step, m = jax.jit(env.step), env.mj_model
  d = mujoco.MjData(m)
  for a in ACTIONS[:2]:
    for f in ("qpos", "qvel", "qacc_warmstart"):
      getattr(d, f)[:] = np.asarray(getattr(s.data, f))
    act = control.sanitize(jnp.asarray(a))[0]
    d.ctrl[:] = np.asarray(control.joint_targets(env.mjx_model, s.data, act, env.tcp_site))
    mujoco.mj_step(m, d, env.substeps)
    s = step(s, jnp.asarray(a))
    np.testing.assert_allclose(np.asarray(s.data.qpos), d.qpos, atol=1e-6)
  assert np.abs(d.qpos[:7] - np.asarray(control.HOME_QPOS)).max() > 0.02  # the arm moved


def test_reset_matches_mjx(blind_fns, c_fns):
  """The C reset (mj_forward) gives MJX's initial state and derived fields. Touches agree except
  at exact contact: task 3 starts a bowl exactly on the cookie box, where C finds dist -1.3e-9
  and MJX's box-box test reports no contact (dist 1.0), so this checks task 0."""
  a, b = c_fns[0](jax.random.PRNGKey(5), 0), blind_fns[0](jax.random.PRNGKey(5), 0)
  np.testing.assert_allclose(a.data.qpos, b.data.qpos, atol=1e-6)  # C renormalises quats
  np.testing.assert_allclose(a.data.xpos, b.data.xpos, atol=1e-5)
  np.testing.assert_allclose(a.obs["proprio"], b.obs["proprio"], atol=1e-5)
  np.testing.assert_array_equal(a.info["priv"]["touch"], b.info["priv"]["touch"])


def test_batched_c_step_under_jit_and_vmap(c_env, c_fns):
  benv = BatchEnv(c_env)
  reset, step = jax.jit(benv.reset), jax.jit(benv.step)
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  s = reset(keys, jnp.array([0, 4, 7]))
  acts = jnp.asarray(ACTIONS)
  s1 = step(s, acts)
  assert s1.data.qpos.shape == (3, c_env.mj_model.nq) and s1.info["step"].tolist() == [1, 1, 1]
  # each world is what stepping it alone gives
  for i in range(3):
    alone = c_fns[1](jax.tree.map(lambda x: x[i], s), acts[i])
    np.testing.assert_allclose(s1.data.qpos[i], alone.data.qpos, atol=1e-6)
    np.testing.assert_allclose(s1.data.xpos[i], alone.data.xpos, atol=1e-6)
  # another action for world 0 leaves worlds 1 and 2 exactly as they were
  s2 = step(s, acts.at[0].set(-acts[0]))
  assert np.abs(np.asarray(s2.data.qpos[0] - s1.data.qpos[0])).max() > 1e-3
  np.testing.assert_array_equal(s2.data.qpos[1:], s1.data.qpos[1:])
  # nested vmap (two batch axes reach the callback) and an open-loop chunk under jit
  s22 = jax.tree.map(lambda x: jnp.stack([x[:2], x[1:]]), s)
  nested = jax.jit(jax.vmap(jax.vmap(c_env.step)))(s22, jnp.stack([acts[:2], acts[1:]]))
  np.testing.assert_allclose(nested.data.qpos[1, 1], s1.data.qpos[2], atol=1e-6)
  chunk, executed = jax.jit(benv.step_chunk)(s, jnp.repeat(acts[:, None], 2, axis=1))
  assert executed.tolist() == [[1, 1]] * 3
  np.testing.assert_allclose(chunk.data.qpos, step(s1, acts).data.qpos, atol=1e-6)


def test_blown_up_world_is_reset_alone(c_env):
  """Autoreset is off in the C model: a NaN state stays NaN, the suite's finite check ends
  that world's episode, and the other world is untouched."""
  env = AutoReset(BatchEnv(c_env))
  s = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(3), 2), jnp.array([2, 2]))
  step = jax.jit(env.step)
  s = step(s, jnp.zeros((2, 7)))
  ok = step(s, jnp.zeros((2, 7)))
  bad = step(s.replace(data=s.data.replace(qvel=s.data.qvel.at[0].set(jnp.nan))), jnp.zeros((2, 7)))
  assert bad.done.tolist() == [1.0, 0.0]
  assert bad.metrics["nonfinite_physics"].tolist() == [1.0, 0.0]
  assert np.all(np.isfinite(np.asarray(bad.data.qpos)))
  np.testing.assert_array_equal(bad.data.qpos[1], ok.data.qpos[1])


def test_expert_succeeds_with_c_physics(c_env, run_bound):
  succ = expert_success(c_env, np.array([0, 0]), np.array([0, 1]), compiler_options=run_bound)
  assert succ.tolist() == [1.0, 1.0]


def test_the_trainer_runs_on_c_physics(tmp_path):
  """--config.env.physics=c through opd_jax.train: the rollout (physics in C inside the compiled
  program, pixels, student and scripted teacher) and the update run; the engine is not part of
  the physics recorded in the checkpoint."""
  import os
  import sys
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from test_train import small_config  # pylint: disable=import-outside-toplevel
  from opd_jax import checkpoint, train  # pylint: disable=import-outside-toplevel
  c = small_config(tmp_path, iterations=1, **{"env.physics": "c"})
  train.validate(c)
  ts = train.run(c, progress=False)
  assert int(ts.step) == 1 and int(ts.nonfinite_updates) == 0
  meta = checkpoint.read_meta(str(tmp_path))[0]
  assert "physics" not in meta["env_kwargs"] and meta["env_kwargs"]["control"] == "torque"
  with pytest.raises(ValueError, match="config.env.physics"):
    train.validate(small_config(tmp_path, **{"env.physics": "bullet"}))
