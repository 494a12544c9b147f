"""Time to the first iteration of a training job: cold, re-run and resumed.

  python benchmarks/startup.py                       # the default job, configs/libero.py
  python benchmarks/startup.py --config configs/libero.py:object,runlocal

Runs the job three times as a user would (``python -m opd_jax.train``), each for one
iteration with evaluation off, and measures the wall time from the process start to the
end of its first iteration (the first row of metrics.jsonl):

1. cold: an empty compilation cache and a new workdir (everything compiles),
2. re-run: a new workdir, the cache of run 1 (the programs load from it),
3. resume: run 1's workdir again, one more iteration (restores its checkpoint; cache hit).

Prints a Markdown table with the compile/load line each run printed and the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(config: str, workdir: str, cache: str, iterations: int, extra: list[str]):
  cmd = [sys.executable, "-m", "opd_jax.train", f"--config={config}",
         f"--config.workdir={workdir}", f"--config.iterations={iterations}",
         "--config.eval.every=0", f"--compile_cache={cache}"] + extra
  t0 = time.time()
  p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  if p.returncode != 0:
    raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  first = rows[-1]   # this process's first (and only) iteration
  line = next((ln for ln in p.stderr.splitlines() if "the gradient step:" in ln), "?")
  return dict(to_first_iteration_s=first["time"] - t0, iteration_s=first["time/iteration_s"],
              compile_s=first.get("time/compile_s", float("nan")), total_s=time.time() - t0,
              line=re.sub(r"^.*?the rollout", "the rollout", line))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default="configs/libero.py")
  ap.add_argument("--extra", default="", help="more flags for every run, space-separated")
  args = ap.parse_args(argv)
  extra = args.extra.split()
  with tempfile.TemporaryDirectory() as tmp:
    cache = os.path.join(tmp, "cache")
    a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
    rows = [("cold (empty cache)", run_once(args.config, a, cache, 1, extra)),
            ("re-run (new workdir)", run_once(args.config, b, cache, 1, extra)),
            ("resume (same workdir)", run_once(args.config, a, cache, 2, extra))]
  print(f"`python benchmarks/startup.py --config {args.config}` "
        f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end)\n")
  print("| run | to the end of iteration 1 | of which the iteration | compile or load | "
        "what it printed |")
  print("|---|---|---|---|---|")
  for name, r in rows:
    print(f"| {name} | {r['to_first_iteration_s']:.0f} s | {r['iteration_s']:.1f} s | "
          f"{r['compile_s']:.0f} s | {r['line']} |")
  cold = rows[0][1]["to_first_iteration_s"]
  print(f"\nre-run / cold: {rows[1][1]['to_first_iteration_s'] / cold:.2f}; "
        f"resume / cold: {rows[2][1]['to_first_iteration_s'] / cold:.2f}")


if __name__ == "__main__":
  main()
