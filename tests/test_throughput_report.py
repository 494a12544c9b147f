"""benchmarks/throughput_report.py: the tables carry the JAX / PyTorch ratio of each row, the
JSON keeps every measurement, the plot is written; the timed loop and the RSS probe measure."""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import throughput_report as R  # noqa: E402


def _row(**kw):
  base = dict(size="default", worlds=8, jax=30.0, jax_compile_s=12.0, jax_rss="900 (+100)",
              torch_variant="eager", torch=10.0, torch_warmup_s=0.5, torch_rss="800 (+50)")
  return dict(base, **kw)


def test_tables_ratios_json_and_plot(tmp_path, capsys):
  results = {
      "env": [_row(size="-", torch_variant="SerialVecEnv")],
      "inference": [_row(flops_per_step=2e9, jax_flops_pct=40.0, torch_flops_pct=13.3)],
      "opd": [_row(jax_cache="0 cached / 2", flops_per_iteration=3e12, jax_flops_pct=5.0,
                   torch_flops_pct=1.7, worlds=32, jax=64.0, torch=16.0,
                   jax_s_per_it=10.0, torch_s_per_it=25.0)]}
  args = argparse.Namespace(shadow_size=1024, json=str(tmp_path / "r.json"),
                            plot=str(tmp_path / "p.png"))
  R.report(results, args, {"numpy 1024": 1e11}, 1e11, 12.0, "jax x, torch y")
  out = capsys.readouterr().out
  assert "MuJoCo shadow map 1024" in out and "jax x, torch y" in out
  rows = [line for line in out.splitlines() if line.startswith("| ")
          and not line.startswith("| size")]
  assert [r.split(" | ")[7] for r in rows[:2]] == ["3.00", "3.00"]
  assert rows[2].split(" | ")[7:10] == ["10.0", "25.0", "2.50"]   # the OPD row: iterations/s
  assert "| 3e+03 | 5.0 | 1.7 |" in out   # GFLOP per iteration, % of peak
  assert json.load(open(tmp_path / "r.json"))["results"]["opd"][0]["worlds"] == 32
  assert os.path.getsize(tmp_path / "p.png") > 10_000


def test_timed_loop_and_peak_rss():
  calls, reps = R.timed_loop(lambda: time.sleep(0.01), 0.1, 3)
  assert reps >= 3 and 20 < calls < 110
  with R.PeakRSS() as rss:
    block = bytearray(200 * 2**20)   # 200 MB, touched
    block[::4096] = b"x" * len(block[::4096])
    time.sleep(0.1)
  del block
  assert rss.peak - rss.start > 150
