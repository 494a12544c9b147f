"""Every file the trainers write into a workdir goes through etils.epath, so a workdir may be
object storage (``gs://...`` on a pod). Here a ``gs://`` bucket is mocked onto a local
directory (etils.epath.testing): the metrics, evaluation reports and videos, the run's
config and action statistics land in it, the checkpoint lookup reads it, and nothing is
written to a local ``gs:`` directory. (Orbax reaches object storage itself.)"""
import json
import os

import ml_collections
import numpy as np
import pytest
from etils.epath import testing as epath_testing

from opd_jax import actions, checkpoint, cli, data, evaluate
from opd_jax.logging import MetricWriter, read_jsonl

BUCKET = "gs://opd-test-bucket"


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """``gs://opd-test-bucket/...`` served from ``tmp_path/bucket``; returns that directory."""
  local = tmp_path / "bucket"
  local.mkdir()
  monkeypatch.chdir(tmp_path)   # a wrongly local write would make tmp_path/gs:

  def tr(p):
    p = os.fspath(p)
    assert p.startswith(BUCKET), f"a local path reached the object-store backend: {p}"
    return str(local) + p[len(BUCKET):]

  def one(fn, path, *a, **k):
    return fn(tr(path), *a, **k)

  def two(fn, path, dst, *a, **k):
    return fn(tr(path), tr(dst), *a, **k)

  fns = {n: one for n in ("open", "exists", "isdir", "listdir", "makedirs", "mkdir", "remove",
                          "rmtree", "stat", "walk", "glob")}
  fns.update({n: two for n in ("rename", "replace", "copy")})
  with epath_testing.mock_epath(**fns):
    yield local
  assert not (tmp_path / "gs:").exists()


def test_writers_reach_object_storage(bucket):
  run = f"{BUCKET}/run"
  w = MetricWriter(run)
  w.write(1, {"train/loss": 1.5})
  w.write(2, {"train/loss": np.float32(1.25)})
  w.close()
  MetricWriter(run).write(3, {"train/loss": 1.0})   # a resumed run keeps the earlier rows
  assert [r["step"] for r in read_jsonl(f"{run}/metrics.jsonl")] == [1, 2, 3]
  assert (bucket / "run" / "metrics.jsonl").read_text().count("\n") == 3

  frames = np.zeros((3, 8, 16, 3), np.uint8)
  result = dict(success=0.5, per_task=[0.5], episode_length=10.0, episodes_per_task=2,
                execute=4, instructions=["pick up the bowl"], task_ids=[0],
                clips=[((0, 1), frames)])
  evaluate.write_report(result, f"{run}/eval/step_3", "title")
  out = bucket / "run" / "eval" / "step_3"
  assert json.loads((out / "results.json").read_text())["success"] == 0.5
  assert "50.0%" in (out / "results.md").read_text()
  assert (out / "task0_ep1.gif").read_bytes()[:3] == b"GIF"

  config = ml_collections.ConfigDict(dict(workdir=run, seed=0))
  cli.save_config(cli.Invocation("train", config, "built-in", (), 0, "", False), run)
  assert json.loads((bucket / "run" / "train_config.json").read_text())["config"]["seed"] == 0

  stats = actions.compute_stats(np.random.default_rng(0).normal(size=(50, 7)))
  data.write_stats(f"{run}/action_stats.json", stats)
  assert json.loads((bucket / "run" / "action_stats.json").read_text()) == json.loads(
      json.dumps(stats.to_dict()))


def test_checkpoint_lookup_reads_object_storage(bucket):
  for step in (5, 10):
    (bucket / "run" / "checkpoints" / str(step) / "meta").mkdir(parents=True)
  (bucket / "run" / "checkpoints" / "15").mkdir()   # no meta: not a checkpoint
  assert checkpoint.absolute(f"{BUCKET}/run") == f"{BUCKET}/run"
  assert checkpoint.saved_steps(f"{BUCKET}/run/checkpoints") == [5, 10]
  assert checkpoint._resolve(f"{BUCKET}/run") == (f"{BUCKET}/run/checkpoints", 10)   # pylint: disable=protected-access
  assert checkpoint._resolve(f"{BUCKET}/run/checkpoints/5") == (f"{BUCKET}/run/checkpoints", 5)   # pylint: disable=protected-access
