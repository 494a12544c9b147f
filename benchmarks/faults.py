"""Fault injection: a training run killed with SIGKILL at random moments and restarted each
time ends exactly where an uninterrupted run ends.

  python benchmarks/faults.py                  # >= 20 kills of the runlocal job
  python benchmarks/faults.py --kills 30 --iterations 40 --seed 1

1. An uninterrupted run of ``--config`` (checkpoint every iteration, evaluation off) to
   ``--iterations``; its start-up time and time per iteration set the kill window.
2. The same command under ``kill -9``: started, killed after a uniformly random delay in
   [1 s, start-up + 3 iterations], restarted (it resumes from its newest readable checkpoint),
   until it has been killed ``--kills`` times; then it runs to the end. Kills land in imports,
   compiles, restores, iterations and checkpoint writes alike.
3. Compared: the final step, every parameter (max |difference|), the optimiser's step count and
   the environment steps counted in the checkpoint meta. Prints a Markdown summary; exit 1 if
   they differ.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import _repo_root  # noqa: F401  isort: skip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(config: str, workdir: str, iterations: int, cache: str) -> list[str]:
  return [sys.executable, "-m", "opd_jax.train", f"--config={config}",
          f"--config.workdir={workdir}", f"--config.iterations={iterations}",
          "--config.eval.every=0", "--config.checkpoint.every=1", "--config.checkpoint.keep=2",
          f"--compile_cache={cache}"]


def rows(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default="configs/libero.py:object,runlocal")
  ap.add_argument("--iterations", type=int, default=40)
  ap.add_argument("--kills", type=int, default=20)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default="runs/faults")
  a = ap.parse_args(argv)
  rng = random.Random(a.seed)
  out = os.path.join(REPO, a.out)
  shutil.rmtree(out, ignore_errors=True)
  cache = os.path.join(out, "cache")
  clean, killed = os.path.join(out, "clean"), os.path.join(out, "killed")

  # ---- the uninterrupted run (also fills the compilation cache)
  subprocess.run(command(a.config, clean, a.iterations, cache), cwd=REPO, check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  t0 = time.time()
  subprocess.run(command(a.config, os.path.join(out, "warm"), 1, cache), cwd=REPO, check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  start_s = time.time() - t0
  per_it = sum(r["time/iteration_s"] for r in rows(clean)) / a.iterations
  window = (1.0, start_s + 3 * per_it)
  print(f"uninterrupted: {a.iterations} iterations, {per_it:.1f} s each; a warm start to one "
        f"iteration {start_s:.1f} s; kills uniform in [{window[0]:.0f}, {window[1]:.0f}] s",
        file=sys.stderr)

  # ---- killed and restarted
  kills = finished_early = attempts = 0
  cmd = command(a.config, killed, a.iterations, cache)
  while True:
    attempts += 1
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    if kills < a.kills:
      try:
        p.wait(timeout=rng.uniform(*window))
      except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        done = max((r["step"] for r in rows(killed)), default=0)
        print(f"kill {kills}: after iteration {done} was logged", file=sys.stderr)
        continue
    _, err = p.communicate()
    if p.returncode != 0:
      raise SystemExit(f"a restart failed (exit {p.returncode}):\n{err[-3000:]}")
    if kills >= a.kills:
      break
    finished_early += 1   # it ended before enough kills: start over, counting from zero
    kills = 0
    shutil.rmtree(killed)

  # ---- compare
  import envs  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from opd_jax import checkpoint  # pylint: disable=import-outside-toplevel
  res = {}
  for name, wd in (("uninterrupted", clean), ("killed", killed)):
    *_, params, _, _, meta = checkpoint.load_policy(wd)
    res[name] = (checkpoint.saved_steps(os.path.join(wd, "checkpoints"))[-1], params, meta)
  (s1, p1, m1), (s2, p2, m2) = res["uninterrupted"], res["killed"]
  diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)))
  same = s1 == s2 and diff == 0.0 and m1["env_steps_total"] == m2["env_steps_total"]
  aside = sorted(d for d in os.listdir(os.path.join(killed, "checkpoints")) if "." in d)
  print(f"\n`python benchmarks/faults.py {' '.join(sys.argv[1:])}` · {os.cpu_count()} CPUs, load "
        f"average {os.getloadavg()[0]:.1f}\n")
  print("| kills (SIGKILL) | restarts | final step (killed / uninterrupted) | max param diff | "
        "env steps (killed / uninterrupted) | checkpoints set aside | same |")
  print("|---|---|---|---|---|---|---|")
  print(f"| {kills} | {attempts - 1} | {s2} / {s1} | {diff:.3g} | {m2['env_steps_total']:.0f} / "
        f"{m1['env_steps_total']:.0f} | {len(aside)} | {'yes' if same else '**no**'} |")
  if finished_early:
    print(f"\n({finished_early} attempt(s) finished before their kill and were started over.)")
  sys.exit(0 if same else 1)


if __name__ == "__main__":
  main()
