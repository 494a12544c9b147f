"""Runs that survive faults: a stop request (SIGTERM / SIGINT) saves and exits 0, resume takes
the newest readable checkpoint and sets the unreadable ones aside, a run stuck on non-finite
numbers stops naming its last checkpoint."""
import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import optax
import pytest

from opd_jax import checkpoint, cli, train
from opd_jax.logging import read_jsonl
from opd_jax.train_state import restore_or_init

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_train import REPO, small_config  # noqa: E402


def _tiny(tmp_path, steps=(1, 2, 3)):
  params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.zeros(3)}
  tx = optax.adam(1e-3)
  mgr = checkpoint.manager(str(tmp_path / "checkpoints"), max_to_keep=None)
  meta = {"model": "m1", "action_stats": {}}
  for s in steps:
    checkpoint.save(mgr, s, jax.tree.map(lambda x, s=s: x + s, params), meta, tx.init(params))
  mgr.close()
  return params, tx, meta


def _files(d):
  return sorted(os.path.relpath(f, d).split(os.sep, 1)[1] for f in
                glob.glob(os.path.join(d, "*", "**"), recursive=True) if os.path.isfile(f))


def test_resume_takes_the_newest_readable_checkpoint_and_keeps_the_others(tmp_path, capsys):
  params, tx, meta = _tiny(tmp_path)
  ck = tmp_path / "checkpoints"
  before = _files(str(ck))
  biggest = max((f for f in glob.glob(str(ck / "3" / "params" / "**"), recursive=True)
                 if os.path.isfile(f)), key=os.path.getsize)
  with open(biggest, "r+b") as f:   # a kill mid-write / a full disk: the file is cut short
    f.truncate(os.path.getsize(biggest) // 2)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  ts, mgr, old = restore_or_init(str(tmp_path), 3, params, tx, meta, sharding)
  assert int(ts.step) == 2 and float(ts.params["b"][0]) == 2.0 and old["model"] == "m1"
  err = capsys.readouterr().err
  assert err.count("skipping checkpoint") == 1 and "skipping checkpoint 3" in err
  assert sorted(os.listdir(ck)) == ["1", "2", "3.unreadable"]
  assert _files(str(ck)) == before   # set aside, nothing deleted
  checkpoint.save(mgr, 3, ts.params, meta, ts.opt_state)   # the run goes on: step 3 again
  mgr.close()
  ts, mgr, _ = restore_or_init(str(tmp_path), 3, params, tx, meta, sharding)
  mgr.close()
  assert int(ts.step) == 3 and float(ts.params["b"][0]) == 2.0


def test_a_checkpoint_of_another_model_is_refused_not_skipped(tmp_path):
  params, tx, meta = _tiny(tmp_path, steps=(1,))
  other = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with pytest.raises(checkpoint.CheckpointError, match="different model"):
    restore_or_init(str(tmp_path), 3, other, tx, {"model": "m2"}, sharding)
  assert os.listdir(tmp_path / "checkpoints") == ["1"]


@pytest.fixture(scope="module")
def small_setup(tmp_path_factory):
  return train.setup(small_config(tmp_path_factory.mktemp("setup")))


def test_nonfinite_streak_stops_naming_the_last_checkpoint(tmp_path, small_setup):
  # teacher log-probs become NaN with sigma 0: every gradient step is skipped
  su = dataclasses.replace(small_setup, teacher=dataclasses.replace(
      small_setup.teacher, sigma=0.0))
  c = small_config(tmp_path, iterations=6, stop_after_nonfinite=2)
  c.checkpoint.every = 1
  with pytest.raises(cli.RunError, match=r"iteration 2: every gradient step of the last 2 "
                     r"iterations .*/checkpoints/1;"):
    train.run(c, progress=False, prepared=su)


def test_a_stop_request_saves_at_the_iteration_boundary(tmp_path, small_setup, monkeypatch):
  if threading.current_thread() is not threading.main_thread():
    pytest.skip("signal handlers live in the main thread")
  calls = []
  real = train.iterate

  def iterate(*args):
    out = real(*args)
    calls.append(1)
    if len(calls) == 2:
      signal.raise_signal(signal.SIGTERM)   # arrives while the iteration's results are pending
    return out
  monkeypatch.setattr(train, "iterate", iterate)
  c = small_config(tmp_path, iterations=5)
  c.checkpoint.every = 10
  ts = train.run(c, progress=False, prepared=small_setup)
  assert int(ts.step) == 2 and len(calls) == 2
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL   # handlers restored
  monkeypatch.setattr(train, "iterate", real)
  ts = train.run(c, progress=False, prepared=small_setup)   # the same command resumes it
  assert int(ts.step) == 5


@pytest.mark.ci_full
def test_sigterm_to_the_cli_saves_and_exits_0(tmp_path):
  cmd = [sys.executable, "-m", "opd_jax.train", "--config=configs/libero.py:object,runlocal",
         "--config.iterations=1000", "--config.eval.every=0", "--config.checkpoint.every=1000",
         f"--config.workdir={tmp_path / 'run'}", f"--compile_cache={tmp_path / 'cache'}"]
  p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = tmp_path / "run" / "metrics.jsonl"
  deadline = time.time() + 600
  while not (metrics.exists() and metrics.read_text().strip()) and p.poll() is None:
    assert time.time() < deadline, "no iteration within 600 s"
    time.sleep(0.5)
  p.send_signal(signal.SIGTERM)
  _, err = p.communicate(timeout=300)
  assert p.returncode == 0, err[-2000:]
  steps = checkpoint.saved_steps(str(tmp_path / "run" / "checkpoints"))
  assert len(steps) == 1 and f"SIGTERM: stopped after iteration {steps[0]}" in err
  rows = [json.loads(line) for line in metrics.read_text().splitlines()]
  assert rows[-1]["step"] == steps[0]
  r = subprocess.run(cmd[:4] + [f"--config.iterations={steps[0] + 1}"] + cmd[5:], cwd=REPO,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0 and f"resuming from {tmp_path / 'run'}/checkpoints/{steps[0]}" in (
      r.stdout + r.stderr), r.stderr[-2000:]


def test_diverging_physics_is_counted_and_training_goes_on(tmp_path):
  """Physics that blows up (NaN velocities from the second action chunk on, in every world)
  through the whole trainer: each world keeps its last finite state and ends its episode, the
  blow-ups are counted in the metrics, the losses stay finite and the parameters move; the next
  iteration starts from fresh worlds."""
  c = small_config(tmp_path, iterations=2)
  su = train.setup(c)
  env = su.env
  physics = env._physics   # pylint: disable=protected-access

  def blowing_up(d, target):
    d1 = physics(d, target)
    return d1.replace(qvel=jnp.where(d.time > 0.19, jnp.nan, d1.qvel))
  env._physics = blowing_up   # pylint: disable=protected-access
  env.blows_up_after_s = 0.19   # a different program: not one traced (and kept) without the fault
  init = jax.tree.map(jnp.copy, su.params)
  ts = train.run(c, progress=False, prepared=su)
  rows = [r for r in read_jsonl(str(tmp_path / "metrics.jsonl")) if "rollout/success" in r]
  assert len(rows) == 2
  for r in rows:
    assert r["rollout/nonfinite_physics"] == 2.0   # one blow-up per world, both worlds
    assert r["rollout/finished"] == 1.0 and r["rollout/episode_length"] < 8
    assert r["train/nonfinite_updates"] == 0.0 and jnp.isfinite(r["train/loss"])
  moved = sum(float(jnp.abs(a - b).sum()) for a, b in zip(jax.tree.leaves(ts.params),
                                                          jax.tree.leaves(init)))
  assert moved > 0


def test_resume_from_takes_weights_only_and_only_in_a_new_workdir(tmp_path, small_setup, capsys):
  a = train.run(small_config(tmp_path / "a", iterations=1), progress=False, prepared=small_setup)
  c = small_config(tmp_path / "b", iterations=0, resume_from=str(tmp_path / "a"))
  b = train.run(c, progress=False, prepared=small_setup)
  assert int(b.step) == 0
  for x, y in zip(jax.tree.leaves(b.opt_state), jax.tree.leaves(small_setup.tx.init(b.params))):
    assert bool(jnp.all(x == y))   # a fresh optimiser
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    assert bool(jnp.all(x == y))
  assert "weights from" in capsys.readouterr().out
  c.iterations = 1
  train.run(c, progress=False, prepared=small_setup)   # saves b's own checkpoint 1
  c.iterations = 2
  train.run(c, progress=False, prepared=small_setup)
  assert "is for a new workdir: not used" in capsys.readouterr().out
  # another architecture is refused in one line naming the field, before anything compiles
  other = small_config(tmp_path / "c", iterations=1, resume_from=str(tmp_path / "a"))
  other.student.model.chunk = 2
  with pytest.raises(cli.UsageError, match=r"config\.resume_from: .*another model.*\(differs in chunk\)"):
    train.run(other, progress=False)


def test_a_checkpoint_in_a_newer_format_is_refused_in_one_line(tmp_path, capsys):
  params, tx, meta = _tiny(tmp_path, steps=(1,))
  path = tmp_path / "checkpoints" / "1" / "meta" / "metadata"
  saved = json.loads(path.read_text())
  assert saved["format"] == checkpoint.FORMAT
  path.write_text(json.dumps(dict(saved, format=checkpoint.FORMAT + 1)))
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with pytest.raises(checkpoint.CheckpointError, match="newer than this opd_jax reads"):
    restore_or_init(str(tmp_path), 3, params, tx, meta, sharding)
  assert os.listdir(tmp_path / "checkpoints") == ["1"]   # refused, not set aside
  from opd_jax import evaluate   # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit) as e:
    cli.run("evaluate", evaluate.main, ["evaluate", f"--config.checkpoint={tmp_path}"],
            default_config=evaluate.default_config, validate=evaluate.validate)
  err = capsys.readouterr().err.strip().splitlines()
  assert e.value.code == 2 and len(err) == 1 and f"in format {checkpoint.FORMAT + 1}" in err[0]
