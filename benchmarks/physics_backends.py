"""The suite's two physics backends: MJX against MuJoCo C inside the jitted step (physics="c",
envs/physics_c.py). Control steps/s (the scripted expert acting, IK + 5 physics substeps, with
and without both cameras) and the compile time of each program, per batch size; every ratio is
measured within this one run.

  python benchmarks/physics_backends.py --suite libero_spatial --batches 1,8,32,128 [--steps 20]
      [--image 64] [--no-pixels] [--threads 1] [--expert_states 50]

--expert_states N: also runs the scripted expert on evaluation states 0..N-1 of task 0 of every
suite under physics="c" and prints the success (the MJX figures: benchmarks/RESULTS.md).
Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import os
import time

import _repo_root  # noqa: F401  (before `envs`: see the module)  isort: skip
import envs  # noqa: E402,F401  (XLA flag before JAX starts)  isort: skip
import jax  # noqa: E402
import numpy as np  # noqa: E402

from envs.core import BatchEnv  # noqa: E402
from envs.expert_eval import expert_success  # noqa: E402


def time_env(env, batch: int, steps: int) -> tuple[float, float]:
  """(control steps/s, compile s) of `steps` expert-driven batched steps in one jitted scan."""
  benv = BatchEnv(env)
  keys = jax.random.split(jax.random.PRNGKey(0), batch)
  tasks = np.arange(batch) % env.num_tasks

  @jax.jit
  def run(s):
    def body(s, _):
      return benv.step(s, jax.vmap(env.expert_action)(s)), None
    return jax.lax.scan(body, s, None, length=steps)[0]

  s = jax.block_until_ready(jax.jit(benv.reset)(keys, tasks))
  t0 = time.perf_counter()
  compiled = run.lower(s).compile()
  compile_s = time.perf_counter() - t0
  s = jax.block_until_ready(compiled(s))  # warm-up
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(s))
  return batch * steps / (time.perf_counter() - t0), compile_s


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--suite", default="libero_spatial")
  ap.add_argument("--batches", default="1,8,32,128")
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--image", type=int, default=64)
  ap.add_argument("--no-pixels", dest="pixels", action="store_false",
                  help="skip the rows with both cameras rendered")
  ap.add_argument("--threads", type=int, default=1,
                  help="C engine threads (mujoco.batch) per callback")
  ap.add_argument("--expert_states", type=int, default=0)
  args = ap.parse_args(argv)
  print(f"{args.suite}, {args.steps} timed control steps per cell (expert acting), "
        f"{os.cpu_count()} CPUs, devices {jax.devices()}, C threads {args.threads}, "
        f"load average {os.getloadavg()[0]:.2f}", flush=True)
  modes = [False, True] if args.pixels else [False]
  suites = {}
  for pixels in modes:
    for physics in ("mjx", "c"):
      kw = dict(image_size=args.image) if pixels else dict(render=False)
      env = envs.make(args.suite, physics=physics, **kw)
      if env._c is not None:  # pylint: disable=protected-access
        env._c.threads = args.threads  # pylint: disable=protected-access
      suites[pixels, physics] = env
  head = "| batch | pixels | MJX steps/s | C steps/s | C / MJX | compile s MJX | compile s C |"
  print(head + "\n" + "|---" * 7 + "|", flush=True)
  for batch in [int(b) for b in args.batches.split(",")]:
    for pixels in modes:
      (r_m, c_m), (r_c, c_c) = (time_env(suites[pixels, p], batch, args.steps)
                                for p in ("mjx", "c"))
      print(f"| {batch} | {'2 x ' + str(args.image) + '²' if pixels else 'none'} | {r_m:.0f} | "
            f"{r_c:.0f} | {r_c / r_m:.1f}x | {c_m:.1f} | {c_c:.1f} |", flush=True)
  if args.expert_states:
    n = args.expert_states
    print(f"\nScripted expert under physics='c', task 0, evaluation states 0..{n - 1}:")
    print("| suite | success | time s |\n|---|---|---|")
    for name in envs.registered():
      env = envs.make(name, render=False, physics="c")
      env._c.threads = args.threads  # pylint: disable=protected-access
      t0 = time.perf_counter()
      succ = expert_success(env, np.zeros(n, np.int32), np.arange(n))
      print(f"| {name} | {100 * succ.mean():.0f}% ({int(succ.sum())}/{n}) | "
            f"{time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
  main()
