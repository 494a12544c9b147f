"""benchmarks/table.py: the Wilson interval against known values, and the table and plot
from evaluation results."""
import json
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import table  # noqa: E402  pylint: disable=wrong-import-position


def test_wilson_interval_matches_hand_values():
  lo, hi = table.wilson(40, 50)            # p = 0.8, n = 50: 0.670 - 0.888 (Wilson 1927)
  assert lo == pytest.approx(0.6697, abs=1e-3) and hi == pytest.approx(0.8876, abs=1e-3)
  assert table.wilson(0, 10)[0] == 0.0 and table.wilson(10, 10)[1] == 1.0
  lo, hi = table.wilson(250, 500)
  assert hi - lo == pytest.approx(2 * 1.96 * 0.5 / 500 ** 0.5, rel=0.01)


def test_table_and_plot_from_results(tmp_path):
  for name, per_task in (("a", [1.0, 0.5]), ("b", [0.0, 0.25])):
    os.makedirs(tmp_path / name)
    (tmp_path / name / "results.json").write_text(json.dumps(dict(
        success=sum(per_task) / 2, per_task=per_task, episodes_per_task=4, task_ids=[3, 7])))
  md = table.table([("a", table.load(str(tmp_path / "a"))),
                    ("b", table.load(str(tmp_path / "b")))], "t")
  assert "| policy | t3 | t7 | average (95% CI) | episodes |" in md
  assert "| a | 100 | 50 | **75.0%**" in md and "| b | 0 | 25 | **12.5%**" in md
  table.main([f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--plot", str(tmp_path / "p.png")])
  assert (tmp_path / "p.png").stat().st_size > 1000


def test_learning_experiments_flags_load_and_validate(monkeypatch):
  """Every run of benchmarks/learning.py: its command line loads as a train config and passes
  validation (nothing runs)."""
  import learning   # pylint: disable=import-outside-toplevel
  from opd_jax import cli, sft, train   # pylint: disable=import-outside-toplevel
  monkeypatch.chdir(learning.REPO)
  n, configs = 0, {}
  for exp, e in learning.EXPERIMENTS.items():
    for run in e.runs:
      argv = learning.command(exp, run, 0, 10, 5)[3:]
      inv = cli.parse("train", ["train"] + argv, config_file="configs/libero.py")
      train.validate(inv.config)
      same = learning.SAME_AS.get((exp, run))
      assert inv.config.workdir.endswith("/".join(same or (exp, run)) + "_s0")
      configs[exp, run] = inv.config
      n += 1
    for run in e.sft:   # offline arms: an opd_jax.sft command line
      cmd = learning.command(exp, run, 0, 10, 5)
      assert cmd[1:3] == ["-m", "opd_jax.sft"]
      inv = cli.parse("sft", ["sft"] + cmd[3:], config_file="configs/libero.py:object,sft")
      sft.validate(inv.config)
      assert inv.config.sft.steps == 80 and inv.config.eval.every == 40
      assert inv.config.data.path == learning.DATA and inv.config.sft.init
      n += 1
  for (exp, run), (exp2, run2) in learning.SAME_AS.items():   # shared runs: the same config
    assert configs[exp, run].to_dict() == configs[exp2, run2].to_dict()
  assert n >= 16


def test_learning_report_from_a_run(tmp_path, monkeypatch):
  import learning   # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(learning, "REPO", str(tmp_path))
  wd = tmp_path / learning.workdir("groups", "G2", 0)
  os.makedirs(wd)
  rows = [dict(step=i, **{"rollout/control_steps": 100.0, "rollout/success": 0.1 * i,
                          "train/entropy": 2.0 - 0.1 * i, "time/iteration_s": 3.0})
          for i in range(1, 7)] + [dict(step=5, **{"eval/success": 0.4})]
  (wd / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  os.makedirs(tmp_path / "docs")
  os.makedirs(tmp_path / "benchmarks")   # the report runs REPO/benchmarks/opd_curve.py
  shutil.copy(os.path.join(os.path.dirname(learning.__file__), "opd_curve.py"),
              tmp_path / "benchmarks")
  md = learning.report("groups", [0], teacher=0.5)
  assert "| G2 | 0 | 6 | 600 | 5: 40 | 500 (iteration 5) | not reached (best 40% at 5) | 1.70 -> 1.60 | 3.0 |" in md, md
  assert (tmp_path / "docs" / "learning_groups.png").exists()
  assert (tmp_path / "benchmarks" / "learning" / "groups.md").read_text() == md
  assert "not reached (best 40% at 5)" in learning.report("groups", [0], teacher=0.9)
  # the repository keeps the run's metrics: with runs/ gone, the same row, and it is finished
  shutil.rmtree(tmp_path / "runs")
  assert (tmp_path / learning.kept(learning.workdir("groups", "G2", 0)) / "metrics.jsonl").exists()
  assert "| G2 | 0 | 6 | 600 | 5: 40 | 500 (iteration 5) |" in learning.report("groups", [0], 0.5)
  assert learning.finished(learning.workdir("groups", "G2", 0), 6)
  assert not learning.finished(learning.workdir("groups", "G2", 0), 6, remake=True)
  assert not learning.finished(learning.workdir("groups", "G2", 0), 7)


def test_learning_report_of_an_sft_arm(tmp_path, monkeypatch):
  """The forgetting experiment's SFT arm: trained / held-out success at SFT step / 8."""
  import learning   # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(learning, "REPO", str(tmp_path))
  wd = tmp_path / learning.workdir("forgetting", "sft", 0)
  os.makedirs(wd)
  per_task = {f"eval/task_{t}": (1.0 if t < 5 else 0.2) for t in range(10)}
  rows = [dict(step=s, loss=1.0) for s in range(1, 81)] + [
      dict(step=80, **{"eval/success": 0.6}, **per_task)]
  (wd / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  md = learning.report("forgetting", [0], teacher=0.81)
  assert "| sft (SFT) | 0 | - | 0 | 10: 100 / 20 | - | - | - | - |" in md, md
