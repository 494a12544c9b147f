"""benchmarks/torch_baseline/vec_env.py: the suites in MuJoCo C with MuJoCo's renderer (the
environment side of the PyTorch baseline) step like the JAX suites, render both cameras, and
the process-parallel vector env gives what the serial one gives.

Control law: from the same initial qpos, 3 control steps (15 physics steps) of the same actions
move the arm joints of C MuJoCo (float64) and of MJX (float32) to within 3e-7 rad (measured on
libero_spatial); the tolerance 1e-5 still fails a dropped null-space pull (2.4e-3 after 3 steps;
the pull is 0 at the home posture of step 1), a flipped one (4.9e-3), a bandwidth of 50 instead of 60 rad/s (1.9e-2), damping ratio 0.8 (1.2e-2), IK damping 0.1
(1.6e-2), or a flipped rotation sign (0.25).
"""
import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.torch_baseline import vec_env as V  # noqa: E402

ACTIONS = np.array([[0.6, -0.4, 0.5, 0.3, -0.2, 0.4, 0.5],
                    [-0.5, 0.7, -0.3, -0.4, 0.3, -0.2, 1.0],
                    [0.3, 0.3, -0.8, 0.1, 0.5, -0.5, -1.0]])
ATOL_ARM = 1e-5


@pytest.fixture(scope="module")
def cfg():
  return V.CConfig.from_suite("libero_spatial", render=False)


def _c_rollout(cfg, qpos):
  w = V.CSuite(cfg)
  w.reset(qpos, 0)
  out = []
  for a in ACTIONS:
    obs, _, _ = w.step(a)
    out.append((w.data.qpos.copy(), obs["proprio"]))
  return w, out


def test_control_law_matches_jax_suite(spatial_blind, blind_fns, cfg):
  reset, _, step = blind_fns
  s = reset(jax.random.PRNGKey(0), 0)
  qpos0 = np.asarray(s.data.qpos, np.float64)
  jax_q = []
  for a in ACTIONS:
    s = step(s, jnp.asarray(a, jnp.float32))
    jax_q.append(np.asarray(s.data.qpos))
  jax_q = np.array(jax_q)
  assert np.abs(jax_q[-1, :7] - qpos0[:7]).max() > 0.05  # the arm moved

  w, out = _c_rollout(dataclasses.replace(cfg, check_success=True), qpos0)
  c_q = np.array([q for q, _ in out])
  np.testing.assert_allclose(c_q[:, :7], jax_q[:, :7], atol=ATOL_ARM)
  np.testing.assert_allclose(c_q[:, 7:9], jax_q[:, 7:9], atol=1e-5)  # fingers
  np.testing.assert_allclose(out[-1][1], np.asarray(s.obs["proprio"]), atol=1e-5)
  # the predicates' inputs and stages (check_success) agree too
  priv, jpriv = w.privileged(), s.info["priv"]
  np.testing.assert_allclose(priv["ent_pos"], np.asarray(jpriv["ent_pos"]), atol=1e-4)
  np.testing.assert_array_equal(priv["touch"], np.asarray(jpriv["touch"]))
  assert priv["touch"].any()  # objects rest on the table
  np.testing.assert_array_equal(w.stages(), np.asarray(s.info["stages"]))
  w.close()

  # the tolerance catches a wrong law: no or a flipped null-space pull, other gains
  for wrong in (dict(nullspace_gain=0.0), dict(nullspace_gain=-0.2), dict(bandwidth=50.0),
                dict(damping_ratio=0.8)):
    _, bad = _c_rollout(dataclasses.replace(cfg, **wrong), qpos0)
    assert np.abs(bad[-1][0][:7] - jax_q[-1, :7]).max() > 100 * ATOL_ARM, wrong


def test_rotvec_matches_jax():
  import mujoco

  from envs import control
  rng = np.random.default_rng(0)
  for angle in np.concatenate([rng.uniform(0, np.pi, 20), [0.0, 1e-4, np.pi - 1e-3, np.pi]]):
    axis = rng.normal(size=3)
    quat, mat = np.empty(4), np.empty(9)
    mujoco.mju_axisAngle2Quat(quat, axis / np.linalg.norm(axis), angle)
    mujoco.mju_quat2Mat(mat, quat)
    mat = mat.reshape(3, 3)
    np.testing.assert_allclose(V.rotvec(mat), np.asarray(control.rotvec(jnp.asarray(mat))),
                               atol=1e-5)


@pytest.fixture(scope="module")
def bank(blind_fns):
  reset = blind_fns[0]
  qpos = np.stack([np.asarray(reset(jax.random.PRNGKey(i), i % 10).data.qpos, np.float64)
                   for i in range(4)])
  return qpos, np.arange(4, dtype=np.int32) % 10


def test_images_of_both_cameras(render_ok, cfg, bank):
  w = V.CSuite(dataclasses.replace(cfg, render=True, image_size=48))
  obs = w.reset(bank[0][0], 0)
  obs, _, _ = w.step(ACTIONS[0])
  w.close()
  for cam in V.CAMERAS:
    img = obs[cam]
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8, (cam, img.shape, img.dtype)
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 20, cam  # not blank
  assert np.abs(obs["agentview"].astype(int) - obs["wrist"]).mean() > 10


def test_subproc_matches_serial(render_ok, cfg, bank):
  # 3 worlds over 2 processes; episodes of 2 steps so that auto-reset cycles the 4-entry bank
  c = dataclasses.replace(cfg, render=True, image_size=32, max_episode_steps=2)
  qpos, tasks = bank
  serial = V.SerialVecEnv(3, c, qpos, tasks)
  sub = V.SubprocVecEnv(3, c, qpos, tasks, num_workers=2)
  try:
    results = [(serial.reset(), sub.reset())]
    rng = np.random.default_rng(0)
    for _ in range(4):
      a = rng.uniform(-1, 1, (3, 7))
      (o1, r1, d1), (o2, r2, d2) = serial.step(a), sub.step(a)
      np.testing.assert_array_equal(d1, d2)
      np.testing.assert_array_equal(r1, r2)
      results.append((o1, o2))
    assert d1.all()  # the 4th step ends the second episode
    for o1, o2 in results:
      assert set(o1) == {"agentview", "wrist", "proprio", "task_id"} == set(o2)
      for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k], err_msg=k)
    assert results[0][0]["agentview"].shape == (3, 32, 32, 3)
    # two auto-resets moved world i on to bank entry (i + 2 * 3) % 4
    np.testing.assert_array_equal(results[-1][0]["task_id"], tasks[[(i + 6) % 4 for i in range(3)]])
  finally:
    serial.close()
    sub.close()
