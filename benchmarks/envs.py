"""Environment throughput: control steps/s of the MJX suite (physics + both cameras),
compile time separately, and the same MJCF stepped by MuJoCo's C batch engine.

  python benchmarks/envs.py --suite libero_spatial --batches 1,16,64 --image 64
  python benchmarks/envs.py --suite libero_goal --batches 16,64 --iterations 4,8   (solver cost)
  python benchmarks/envs.py --suite libero_object --batches 16,64 --pixels   (env steps/s with
      both cameras: MJX or C physics, each camera tiled or testing every geom at every pixel)

Prints one table; every ratio is measured within this one run.
"""
import argparse
import os
import time

import _repo_root  # noqa: E402,F401  (this file is named like the package it measures)

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_fusion_emitters=false").strip()

import jax  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402
from envs.core import BatchEnv  # noqa: E402


def time_mjx(env, batch, steps):
  benv = BatchEnv(env)
  keys = jax.random.split(jax.random.PRNGKey(0), batch)
  reset = jax.jit(benv.reset)

  @jax.jit
  def run(s):
    def body(s, _):
      a = jax.vmap(env.expert_action)(s)
      return benv.step(s, a), None
    s, _ = jax.lax.scan(body, s, None, length=steps)
    return s

  s = reset(keys)
  t0 = time.perf_counter()
  run.lower(s).compile()
  compile_s = time.perf_counter() - t0
  s = jax.block_until_ready(run(s))
  t0 = time.perf_counter()
  s = jax.block_until_ready(run(s))
  return batch * steps / (time.perf_counter() - t0), compile_s


def time_c_batch(env, batch, steps, threads):
  """mujoco.batch when present (MuJoCo >= 4.0), else a plain mj_step loop."""
  m = env.mj_model
  nsub = env.substeps
  # Same initial states as the MJX worlds (robot at home, objects on the table).
  s0 = jax.jit(BatchEnv(env).reset)(jax.random.split(jax.random.PRNGKey(0), batch))
  qpos = np.asarray(s0.data.qpos, np.float64)
  ctrl = np.asarray(s0.data.ctrl, np.float64)
  try:
    from mujoco import batch as mjbatch  # pylint: disable=import-outside-toplevel
    b = mjbatch.Batch(m, batch, nthread=threads)
    b.bind("qpos")[:] = qpos
    b.forward()
    b.bind("ctrl")[:] = ctrl
    b.step(nstep=nsub)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
      b.bind("ctrl")[:] = ctrl
      b.step(nstep=nsub)
    rate = batch * steps / (time.perf_counter() - t0)
    bad = [b.error(i) for i in range(batch) if b.error(i)]
    return rate, f"mujoco.batch, {threads} threads" + (f" (errors: {bad[:2]})" if bad else "")
  except Exception as e:  # noqa: BLE001 - fall back, and say so
    datas = [mujoco.MjData(m) for _ in range(batch)]
    for d, q in zip(datas, qpos):
      d.qpos[:] = q
    t0 = time.perf_counter()
    for _ in range(steps):
      for d in datas:
        d.ctrl[:] = ctrl[0]
        mujoco.mj_step(m, d, nsub)
    return batch * steps / (time.perf_counter() - t0), f"mj_step loop ({type(e).__name__}: {e})"


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--suite", default="libero_spatial")
  p.add_argument("--batches", default="1,16,64")
  p.add_argument("--image", type=int, default=64)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--threads", type=int, default=os.cpu_count())
  p.add_argument("--iterations", default=None,
                 help="A,B: instead, MJX physics steps/s at solver iterations A and B (expert acting)")
  p.add_argument("--pixels", action="store_true",
                 help="instead, env steps/s with both cameras every step: physics mjx / c x the "
                      "renderer tiled / untiled (tile=0, every geom at every pixel)")
  args = p.parse_args()
  if args.pixels:
    pixels(args)
    return
  if args.iterations:
    its = [int(i) for i in args.iterations.split(",")]
    suites = [envs.make(args.suite, render=False, solver_iterations=i) for i in its]
    print(f"{args.suite}: MJX physics steps/s (expert acting, {args.steps} steps) by solver iterations")
    print("| batch | " + " | ".join(f"{i} iterations" for i in its) + f" | {its[0]} / {its[-1]} |")
    print("|---" * (len(its) + 2) + "|")
    for batch in [int(b) for b in args.batches.split(",")]:
      rates = [time_mjx(e, batch, args.steps)[0] for e in suites]
      print(f"| {batch} | " + " | ".join(f"{r:.0f}" for r in rates) +
            f" | {rates[0] / rates[-1]:.2f}x |", flush=True)
    return
  blind = envs.make(args.suite, render=False)
  seeing = envs.make(args.suite, image_size=args.image)
  print(f"{args.suite}: {blind.num_contact_pairs} contact pairs, {blind.substeps} substeps/step, "
        f"devices {jax.devices()}")
  print("| batch | MJX physics steps/s | MJX + 2 cameras steps/s | compile s (phys / +cams) | "
        "C engine steps/s | C / MJX physics | C / MJX with images |")
  print("|---|---|---|---|---|---|---|")
  for batch in [int(b) for b in args.batches.split(",")]:
    phys, c1 = time_mjx(blind, batch, args.steps)
    imgs, c2 = time_mjx(seeing, batch, args.steps)
    cfps, how = time_c_batch(blind, batch, args.steps, args.threads)
    print(f"| {batch} | {phys:.0f} | {imgs:.0f} | {c1:.1f} / {c2:.1f} | {cfps:.0f} | "
          f"{cfps / phys:.1f}x | {cfps / imgs:.1f}x |", flush=True)
  print(f"C engine: {how}")


def pixels(args):
  """Env steps/s with both cameras rendered every step, the expert acting: the ratio of each
  variant to MJX physics with the untiled renderer (the renderer before tile culling)."""
  variants = [("mjx", 0), ("mjx", None), ("c", 0), ("c", None)]
  print(f"{args.suite}: env steps/s, both {args.image}x{args.image} cameras every control step, "
        f"{args.steps} steps timed after a warm-up call; devices {jax.devices()}")
  print("| batch | " + " | ".join(f"{ph} physics, {'untiled' if t == 0 else 'tiled'}"
                                   for ph, t in variants) + " | best / MJX untiled |")
  print("|---" * (len(variants) + 2) + "|")
  for batch in [int(b) for b in args.batches.split(",")]:
    rates, compiles = [], []
    for physics, tile in variants:
      env = envs.make(args.suite, image_size=args.image, physics=physics)
      if tile is not None:   # before anything traces the observation
        env.render_model = env.render_model.replace(tile=tile)
      rate, c = time_mjx(env, batch, args.steps)
      rates.append(rate)
      compiles.append(c)
    print(f"| {batch} | " + " | ".join(f"{r:.0f}" for r in rates) +
          f" | **{max(rates) / rates[0]:.1f}x** |", flush=True)
    print(f"  (compile s: {', '.join(f'{c:.1f}' for c in compiles)})", flush=True)


if __name__ == "__main__":
  main()
