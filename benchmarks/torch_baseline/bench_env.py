"""Env steps/s of the PyTorch baseline's environment side (vec_env.py: MuJoCo C physics, MuJoCo's
renderer, both cameras), serial and process-parallel, with random actions. Prints a Markdown table.

    python benchmarks/torch_baseline/bench_env.py --worlds 1,8,32 --env-steps 320

One env step = one world's 20 Hz control step (5 physics steps) and its two camera images.
Each configuration runs max(3, env_steps // n) vector steps after 2 untimed warm-up steps.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmarks.torch_baseline import vec_env as V  # noqa: E402  (sets MUJOCO_GL etc. first)

import numpy as np  # noqa: E402


def bench(venv, n: int, iters: int, rng) -> float:
  venv.reset()
  for _ in range(2):
    venv.step(rng.uniform(-1, 1, (n, 7)))
  t = time.perf_counter()
  for _ in range(iters):
    venv.step(rng.uniform(-1, 1, (n, 7)))
  return n * iters / (time.perf_counter() - t)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--suite", default="libero_spatial")
  p.add_argument("--worlds", default="1,8,32")
  p.add_argument("--env-steps", type=int, default=320, help="env steps per configuration")
  p.add_argument("--image-size", type=int, default=64)
  p.add_argument("--workers", type=int, default=None, help="SubprocVecEnv processes "
                 "(default os.cpu_count())")
  p.add_argument("--shadow-size", type=int, default=None,
                 help="MuJoCo shadow map size (default: the model's, 4096; 0: no shadows)")
  p.add_argument("--no-render", action="store_true", help="physics and proprio only")
  p.add_argument("--bank", type=int, default=10, help="initial states from the JAX suite")
  p.add_argument("--backends", default="serial,subproc")
  args = p.parse_args()
  worlds = [int(w) for w in args.worlds.split(",")]
  cfg = V.CConfig.from_suite(args.suite, image_size=args.image_size,
                             shadow_size=args.shadow_size, render=not args.no_render)
  t = time.perf_counter()
  qpos, tasks = V.initial_states(args.suite, args.bank)
  print(f"{args.bank} initial states from the JAX suite in {time.perf_counter() - t:.1f} s",
        file=sys.stderr)
  workers = args.workers or os.cpu_count()
  rng = np.random.default_rng(0)
  rows = []
  for backend in args.backends.split(","):
    for n in worlds:
      iters = max(3, args.env_steps // n)
      if backend == "serial":
        venv, k = V.SerialVecEnv(n, cfg, qpos, tasks), 1
      else:
        venv = V.SubprocVecEnv(n, cfg, qpos, tasks, num_workers=workers)
        k = venv.num_workers
      try:
        sps = bench(venv, n, iters, rng)
      finally:
        venv.close()
      rows.append((backend, n, k, iters, sps))
      print(f"{backend} n={n}: {sps:.1f} env steps/s", file=sys.stderr)
  shadow = "model default (4096)" if args.shadow_size is None else args.shadow_size
  pixels = ("no pixels" if args.no_render else
            f"pixels: 2 cameras {args.image_size}x{args.image_size}, shadow map {shadow}")
  print(f"\n{args.suite}, {pixels}, MUJOCO_GL={os.environ['MUJOCO_GL']}, "
        f"{os.cpu_count()} CPUs\n")
  print("| vec env | worlds | processes | vector steps | env steps/s |")
  print("|---|---:|---:|---:|---:|")
  for backend, n, k, iters, sps in rows:
    print(f"| {backend} | {n} | {k} | {iters} | {sps:.1f} |")


if __name__ == "__main__":
  main()
