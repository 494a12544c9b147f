"""benchmarks/table.py: the Wilson interval against known values, and the table and plot
from evaluation results."""
import json
import os
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
