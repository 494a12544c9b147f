"""Several JAX processes on one machine (launch/local.sh: a local coordinator, CPU collectives
over gloo), the multi-host path of a pod: a short OPD run and a short SFT run on two
processes compute what one process with the same two-device mesh computes, and each one's
checkpoint resumes in the other; a stop signal to one process stops both at one iteration."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from opd_jax import checkpoint
from opd_jax.logging import read_jsonl
from synthetic_demos import SIZE, write_demo_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPD = ("opd_jax.train", "--config=configs/libero.py:object,runlocal", "--config.eval.every=2",
       "--config.eval.videos=0", "--config.checkpoint.average=2")


def _run(args, workdir, processes, tmp):
  """``python -m ARGS`` in ``processes`` processes (2: launch/local.sh; 1: one process with two
  host devices, the same mesh); returns the main process's output."""
  args = [*args, f"--config.workdir={workdir}"]
  if processes == 1:
    cmd, env = [sys.executable, "-m", *args, "--host_devices=2"], dict(os.environ)
  else:
    logs = str(tmp / f"logs_{os.path.basename(workdir)}")
    cmd = ["bash", os.path.join(REPO, "launch", "local.sh"), *args]
    env = dict(os.environ, NPROC=str(processes), LOGDIR=logs)
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  if r.returncode:
    other = ""
    if processes > 1:
      with open(os.path.join(logs, "process_1.log")) as f:
        other = f.read()[-3000:]
    pytest.fail(f"{cmd} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}\n"
                f"process 1:\n{other}")
  if processes > 1:   # the main process's whole output, as its log holds it
    with open(os.path.join(logs, "process_0.log")) as f:
      return f.read()
  return r.stdout + r.stderr


def _params(path):
  return checkpoint.load_policy(path)[1]


def _assert_same(a, b, atol=1e-6):
  import jax  # pylint: disable=import-outside-toplevel
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (k, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=atol,
                               err_msg=jax.tree_util.keystr(k))


def _cross(args, steps, more, tmp):
  """Runs ``steps`` in two processes and in one, checks they agree, then resumes each one's
  workdir in the other kind to ``more`` steps; returns the four workdirs."""
  two, one = str(tmp / "two"), str(tmp / "one")
  out2 = _run([*args, *steps], two, 2, tmp)
  _run([*args, *steps], one, 1, tmp)
  two_then_one, one_then_two = str(tmp / "two_then_one"), str(tmp / "one_then_two")
  shutil.copytree(two, two_then_one)
  shutil.copytree(one, one_then_two)
  out21 = _run([*args, *more], two_then_one, 1, tmp)
  out12 = _run([*args, *more], one_then_two, 2, tmp)
  return (two, one, two_then_one, one_then_two), (out2, out21, out12)


def _rows(workdir, key):
  return [(r["step"], r[key]) for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if key in r]


def test_opd_two_processes_match_one(tmp_path):
  (two, one, two_one, one_two), (out2, out21, out12) = _cross(
      OPD, ["--config.iterations=2"], ["--config.iterations=3"], tmp_path)
  assert "4 worlds (2 per device x 2 device(s))" in out2
  _assert_same(_params(f"{two}/checkpoints/2"), _params(f"{one}/checkpoints/2"))
  for key in ("train/reverse_kl", "rollout/success", "eval/success"):
    a, b = _rows(two, key), _rows(one, key)
    assert a and [s for s, _ in a] == [s for s, _ in b], key
    np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=1e-4, err_msg=key)
  # process 0 alone wrote the files: one metrics row per step, one averaged checkpoint
  assert [s for s, _ in _rows(two, "train/reverse_kl")] == [1, 2]
  assert os.path.isdir(f"{two}/average/checkpoints/2/params")
  # each kind resumes the other's checkpoint and takes the same third step
  assert "resuming from" in out21 and "resuming from" in out12
  _assert_same(_params(f"{two_one}/checkpoints/3"), _params(f"{one_two}/checkpoints/3"))


def test_sft_two_processes_match_one(tmp_path):
  demos = str(tmp_path / "demos.hdf5")
  write_demo_file(demos)
  sft = ("opd_jax.sft", "--config=configs/libero.py:spatial,sft,runlocal",
         f"--config.data.path={demos}", f"--config.env.image_size={SIZE}",
         "--config.sft.batch=16", "--config.eval.every=0", "--config.checkpoint.every=2",
         "--config.data.val_fraction=0.25", "--config.log_every=1")
  (two, one, two_one, one_two), _ = _cross(
      sft, ["--config.sft.steps=4"], ["--config.sft.steps=6"], tmp_path)
  _assert_same(_params(f"{two}/checkpoints/4"), _params(f"{one}/checkpoints/4"))
  a, b = _rows(two, "train/loss"), _rows(one, "train/loss")
  assert [s for s, _ in a] == [1, 2, 3, 4]
  np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=1e-4)
  _assert_same(_params(f"{two_one}/checkpoints/6"), _params(f"{one_two}/checkpoints/6"))


def test_launch_scripts_are_shellcheck_clean():
  """launch/: the local, GPU, SLURM and Cloud TPU pod scripts, and scripts/ (shellcheck from the
  dev extra)."""
  exe = shutil.which("shellcheck")
  if exe is None:
    pytest.skip("shellcheck is not installed: pip install -e '.[dev]' brings it")
  scripts = sorted(os.path.join(REPO, "launch", f) for f in os.listdir(os.path.join(REPO, "launch"))
                   if f.endswith(".sh"))
  assert len(scripts) >= 4
  r = subprocess.run([exe, *scripts], capture_output=True, text=True)
  assert r.returncode == 0, r.stdout
  # scripts/ (experiment drivers) source the venv, which shellcheck cannot follow: warnings up
  tools = sorted(os.path.join(REPO, "scripts", f) for f in os.listdir(os.path.join(REPO, "scripts"))
                 if f.endswith(".sh"))
  r = subprocess.run([exe, "-S", "warning", *tools], capture_output=True, text=True)
  assert r.returncode == 0, r.stdout


def test_a_stop_signal_to_one_process_stops_both_at_one_iteration(tmp_path):
  """SIGTERM to process 1 alone (a preempted host): both processes save the same iteration's
  checkpoint and exit 0, and the launcher with them."""
  wd, logs = tmp_path / "run", tmp_path / "logs"
  cmd = ["bash", os.path.join(REPO, "launch", "local.sh"), "opd_jax.train",
         "--config=configs/libero.py:object,runlocal", "--config.eval.every=0",
         "--config.iterations=500", f"--config.workdir={wd}"]
  p = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, NPROC="2", LOGDIR=str(logs)),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while not (wd / "metrics.jsonl").exists():   # the first iteration is done
    assert p.poll() is None and time.time() < deadline, p.communicate()
    time.sleep(0.5)
  os.kill(int((logs / "process_1.pid").read_text()), signal.SIGTERM)
  _, err = p.communicate(timeout=300)
  assert p.returncode == 0, err[-3000:]
  said = [re.search(r"stopped after iteration (\d+)", (logs / f"process_{i}.log").read_text())
          for i in (0, 1)]
  assert all(said), [(logs / f"process_{i}.log").read_text()[-1500:] for i in (0, 1)]
  step = int(said[0].group(1))
  assert int(said[1].group(1)) == step < 500
  assert "another process: stopped" in (logs / "process_0.log").read_text()
  assert str(step) in os.listdir(wd / "checkpoints")
