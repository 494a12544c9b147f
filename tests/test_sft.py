"""Offline SFT (opd_jax.sft): learning, self-describing checkpoints, resume, shared statistics.

Uses a synthetic demo file written with opd_jax.collect.write_demo (the real layout, no
simulation) at 16x16 so the whole module runs in well under a minute on CPU.
"""
import json
import os
import shutil

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import libero
from opd_jax import checkpoint, collect, data, sft
from opd_jax.policy import Policy
from synthetic_demos import SIZE, TASKS, write_demo_file as _write_file


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory):
  p = str(tmp_path_factory.mktemp("sft") / "demos.hdf5")
  _write_file(p)
  return p


def _config(path, workdir, steps, **kw):
  c = libero.get_config("spatial,sft,runlocal")
  c.env.image_size = SIZE
  c.data.path = path
  c.workdir = workdir
  c.sft.steps, c.sft.batch = steps, 16
  c.eval.every = 0
  c.log_every = 1
  c.checkpoint.every = steps // 2
  c.optim.lr, c.optim.warmup = 3e-3, 1
  for k, v in kw.items():
    node, *rest = k.split("__")
    if rest:
      c[node][rest[0]] = v
    else:
      c[k] = v
  return c


def _losses(workdir):
  from opd_jax.logging import read_jsonl  # pylint: disable=import-outside-toplevel
  return {r["step"]: r["train/loss"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "train/loss" in r}


@pytest.fixture(scope="module")
def trained(demo_path, tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("run") / "sft")
  ts = sft.run(_config(demo_path, wd, 40, data__val_fraction=0.25), progress=False)
  return wd, ts


def test_loss_decreases(trained):
  wd, ts = trained
  losses = _losses(wd)
  assert int(ts.step) == 40
  first = np.mean([losses[s] for s in (1, 2, 3)])
  last = np.mean([losses[s] for s in (38, 39, 40)])
  assert last < 0.6 * first, (first, last)
  assert first > 5.0   # starts near log(256): the check above is not trivially met


def test_checkpoint_reload_bit_identical(trained, demo_path):
  wd, ts = trained
  graphdef, params, cfg, stats, meta = checkpoint.load_policy(wd)
  for k in ("model", "action_stats", "suite", "env_kwargs", "instructions", "config"):
    assert k in meta
  # the physics it was trained under; a checkpoint from before the field ran the scene's 4
  assert checkpoint.trained_env_kwargs(meta)["solver_iterations"] == 8
  assert checkpoint.trained_env_kwargs({"env_kwargs": {"control": "torque"}}) == dict(
      control="torque", solver_iterations=4)
  assert meta["action_stats"] == data.read_stats(os.path.join(wd, "action_stats.json")).to_dict()
  d = data.load(demo_path)
  arr = data.build_arrays(d, stats, cfg.history, cfg.chunk, cfg.cameras)
  hist, _ = data.gather(arr, jnp.arange(8))
  pol = Policy.build(graphdef, cfg, stats, meta["instructions"])
  ref = pol.logits(ts.params, hist)
  np.testing.assert_array_equal(np.asarray(pol.logits(params, hist)), np.asarray(ref))


def test_resume_continues_from_saved_step(trained, demo_path, tmp_path):
  """Restart from the mid-run checkpoint: the run continues at step 20 and ends exactly
  where the uninterrupted run did (randomness depends on (seed, step) only)."""
  wd, ts = trained
  wd2 = str(tmp_path / "resumed")
  shutil.copytree(wd, wd2)
  shutil.rmtree(os.path.join(wd2, "checkpoints", "40"))
  os.remove(os.path.join(wd2, "metrics.jsonl"))
  ts2 = sft.run(_config(demo_path, wd2, 40, data__val_fraction=0.25), progress=False)
  assert int(ts2.step) == 40
  assert sorted(_losses(wd2)) == list(range(21, 41))   # nothing before the saved step re-ran
  for a, b in zip(jax.tree.leaves(ts.params), jax.tree.leaves(ts2.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_data_tasks_trains_on_those_tasks_only(trained, demo_path, tmp_path):
  wd, _ = trained
  stats = os.path.join(wd, "action_stats.json")
  sft.run(_config(demo_path, str(tmp_path / "two"), 2, data__tasks=(0, 2), data__stats_path=stats),
          progress=False)
  meta = checkpoint.load_policy(str(tmp_path / "two"))[4]
  assert meta["data"]["tasks"] == [0, 2] and meta["data"]["episodes"] == 2 * 3
  with pytest.raises(ValueError, match=r"config\.data\.tasks: \[5\] have no demos"):
    sft.run(_config(demo_path, str(tmp_path / "none"), 2, data__tasks=(1, 5)), progress=False)


def test_one_demo_student_shares_teacher_stats(trained, demo_path, tmp_path):
  wd, _ = trained
  teacher_stats = os.path.join(wd, "action_stats.json")
  wd2 = str(tmp_path / "student")
  sft.run(_config(demo_path, wd2, 2, data__demos_per_task=1, data__stats_path=teacher_stats),
          progress=False)
  _, _, _, stats, meta = checkpoint.load_policy(wd2)
  assert meta["data"]["episodes"] == len(TASKS)
  with open(teacher_stats) as f:
    assert stats.to_dict() == json.load(f)
  # without sharing, a one-demo subset gives different statistics
  own = data.demo_stats(data.load(demo_path, demos_per_task=1))
  assert own.to_dict() != stats.to_dict()
  # a checkpoint directory works as stats_path too
  assert data.read_stats(wd).to_dict() == stats.to_dict()


def test_warm_start_from_checkpoint(trained, demo_path, tmp_path):
  """config.sft.init fine-tunes a checkpoint: its params (the first loss is the trained run's,
  not ~log 256) and its action statistics (not the subset's own), with a fresh optimiser."""
  wd, _ = trained
  first_trained = _losses(wd)[1]
  wd2 = str(tmp_path / "warm")
  ts = sft.run(_config(demo_path, wd2, 2, data__demos_per_task=1, sft__init=wd), progress=False)
  assert int(ts.step) == 2
  assert _losses(wd2)[1] < 0.6 * first_trained, (_losses(wd2), first_trained)
  _, _, _, stats, meta = checkpoint.load_policy(wd2)
  assert stats.to_dict() == data.read_stats(wd).to_dict()
  assert wd in meta["student_init"]
  # statistics that disagree with the checkpoint's are refused, naming both fields
  other = data.demo_stats(data.load(demo_path, demos_per_task=1))
  bad = str(tmp_path / "other_stats.json")
  data.write_stats(bad, other)
  with pytest.raises(ValueError, match="sft.init"):
    sft.run(_config(demo_path, str(tmp_path / "warm2"), 2, sft__init=wd, data__stats_path=bad),
            progress=False)


def test_validate_names_field(demo_path, tmp_path):
  with pytest.raises(ValueError, match="config.data.path"):
    sft.validate(_config("", str(tmp_path), 2))
  with pytest.raises(ValueError, match="config.data.demos_per_task"):
    sft.validate(_config(demo_path, str(tmp_path), 2, data__demos_per_task=0))
  c = _config(demo_path, str(tmp_path / "wrong_size"), 2)
  c.env.image_size = 32
  with pytest.raises(ValueError, match="image_size"):
    sft.run(c, progress=False)
  # demos without env_args['env_kwargs']['control'] were collected with the servo law
  old_path = str(tmp_path / "old_demos.hdf5")
  shutil.copy(demo_path, old_path)
  with h5py.File(old_path, "a") as f:
    del f["data"].attrs["env_args"]
  c = _config(old_path, str(tmp_path / "wrong_control"), 2)
  assert c.env.control == "torque"
  with pytest.raises(ValueError, match="collected with control='servo'"):
    sft.run(c, progress=False)
  c.env.control = "velocity"
  with pytest.raises(ValueError, match="env.control"):
    sft.run(c, progress=False)
  # a file that records its law, joined with one that does not: each file is checked
  c = _config(f"{demo_path},{old_path}", str(tmp_path / "mixed_control"), 2)
  with pytest.raises(ValueError, match="old_demos.hdf5 were collected with control='servo'"):
    sft.run(c, progress=False)


def test_random_shift_moves_content():
  img = jnp.zeros((4, 1, 16, 16, 3), jnp.uint8).at[:, :, 8, 8].set(255)
  out = sft.random_shift(img, jax.random.PRNGKey(0), 3)
  assert out.shape == img.shape and out.dtype == jnp.uint8
  pos = [tuple(np.argwhere(np.asarray(o[0, :, :, 0]))[0]) for o in out]
  assert all(abs(r - 8) <= 3 and abs(c - 8) <= 3 for r, c in pos)
  assert len(set(pos)) > 1
  np.testing.assert_array_equal(sft.random_shift(img, jax.random.PRNGKey(0), 0), img)


def test_policy_driven_collection(trained, tmp_path):
  """collect --policy: the checkpoint drives the worlds. handover=0: the expert drives from
  the first step (an expert trajectory). beta=0 (DAgger relabelling): the policy drives the
  whole episode from the same initial states, so the first observation and recorded action
  agree, then the states part ways while the recorded actions stay the expert's.
  handover=N: the policy drives h ~ U{0..N} steps, and only the expert's part is written."""
  wd, _ = trained
  kw = dict(image_size=SIZE, batch=2, seed=3, tasks=[0], progress=False, keep="all",
            policy=wd, env_kwargs=dict(max_episode_steps=16))
  modes = {"expert": {"handover": 0}, "relabel": {"beta": 0.0}, "handover": {"handover": 8}}
  paths = {m: str(tmp_path / f"{m}.hdf5") for m in modes}
  kw["collector"] = col = collect.Collector("libero_spatial", dict(max_episode_steps=16,
                                                                   image_size=SIZE))
  for mode, extra in modes.items():
    r = collect.collect("libero_spatial", 2, paths[mode], **kw, **extra)
    assert r["kept"][0] == 2, (mode, r)
  with h5py.File(paths["expert"]) as fe, h5py.File(paths["relabel"]) as fp:
    assert fp["data"].attrs["keep"] == "all" and fp["data"].attrs["beta"] == 0.0
    for name in ("demo_0", "demo_1"):
      e, p = fe["data"][name], fp["data"][name]
      assert int(e.attrs["num_samples"]) == int(p.attrs["num_samples"]) == 16   # time limit
      ee, pe = e["obs/ee_states"][()], p["obs/ee_states"][()]
      np.testing.assert_allclose(pe[0], ee[0], atol=1e-6)          # same initial state
      np.testing.assert_allclose(p["actions"][0], e["actions"][0], atol=1e-6)
      assert np.abs(pe[-1, :3] - ee[-1, :3]).max() > 1e-3          # the policy went elsewhere
      assert not p["rewards"][()].any() and p["dones"][-1] == 1    # failures are kept
  with h5py.File(paths["handover"]) as fh, h5py.File(paths["expert"]) as fe:
    assert int(fh["data"].attrs["handover"]) == 8
    lengths = sorted(int(fh["data"][n].attrs["num_samples"]) for n in fh["data"])
    hs = [int(np.random.default_rng([3, 0, a]).integers(0, 9)) for a in range(2)]
    assert lengths == sorted(16 - h for h in hs), (lengths, hs)
    for n in fh["data"]:   # a recording that starts after a policy prefix starts elsewhere
      if int(fh["data"][n].attrs["num_samples"]) < 16:
        start = fh["data"][n]["obs/ee_states"][0]
        assert min(np.abs(start - fe["data"][m]["obs/ee_states"][0]).max() for m in fe["data"]) > 1e-4
  # relabelled data loads like any demo file
  assert data.load(paths["relabel"]).ep_len.tolist() == [16, 16]
  # the three modes ran one compiled policy block (and one refill)
  blocks = [f._cache_size() for k, f in col.blocks.items() if k[0] == "policy"]
  assert blocks == [1] and col.refill._cache_size() == 1, (blocks, col.refill._cache_size())
  with pytest.raises(ValueError, match="beta"):
    collect.collect("libero_spatial", 1, str(tmp_path / "x.hdf5"), beta=1.5, **kw)
  with pytest.raises(ValueError, match="exclusive"):
    collect.collect("libero_spatial", 1, str(tmp_path / "x.hdf5"), beta=0.5, handover=4, **kw)
