"""Writes a video of the scripted expert solving one task, both cameras side by side.

  python -m envs.show libero_spatial --task 7 [--out expert.gif] [--size 128] [--init 0]
      [--frame frame.png]   # also a still: the frame where the gripper first closes

GIF or MP4 by the file extension (MP4 needs imageio-ffmpeg, installed with the package).
"""
import argparse
import time

import envs  # sets the XLA flag before JAX starts
from envs.control import FINGER_OPEN
import imageio.v2 as imageio
import jax
import numpy as np
from tqdm import tqdm


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("suite", choices=envs.registered())
  p.add_argument("--task", type=int, default=0)
  p.add_argument("--init", type=int, default=0, help="evaluation initial state index (0-49)")
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--out", default=None)
  p.add_argument("--max-steps", type=int, default=None)
  p.add_argument("--frame", default=None, help="also write one still (PNG): the first frame "
                 "with the gripper closed (the grasp), else the last")
  args = p.parse_args(argv)
  env = envs.make(args.suite, image_size=args.size)
  if not 0 <= args.task < env.num_tasks:
    p.error(f"--task must be in [0, {env.num_tasks - 1}] for {args.suite}")
  out = args.out or f"{args.suite}_task{args.task}.gif"
  print(f"task {args.task}: {env.instructions[args.task]}")
  print(f"compiling the expert's step and the {args.size}x{args.size} cameras "
        f"(1-2 minutes on a 2-core CPU) ...", flush=True)
  t0 = time.time()
  s = jax.jit(env.reset_eval)(args.task, args.init)
  step = jax.jit(lambda s: env.step(s, env.expert_action(s))).lower(s).compile()
  print(f"compiled in {time.time() - t0:.0f} s", flush=True)
  frames, success, grasp = [], False, None
  for _ in tqdm(range(args.max_steps or env.max_episode_steps), desc="episode", unit="step"):
    frames.append(np.concatenate([np.asarray(s.obs["agentview"]), np.asarray(s.obs["wrist"])], 1))
    s = step(s)
    if grasp is None and float(np.asarray(s.info["priv"]["fingers"]).sum()) < 1.5 * FINGER_OPEN:
      grasp = len(frames)
    if float(s.info["success"]) > 0:
      success = True
      frames.append(np.concatenate([np.asarray(s.obs["agentview"]), np.asarray(s.obs["wrist"])], 1))
      break
  imageio.mimsave(out, frames, **({"duration": 0.05} if out.endswith(".gif") else {"fps": 20}))
  if args.frame:
    imageio.imwrite(args.frame, frames[min(grasp + 5, len(frames) - 1) if grasp is not None else -1])
  print(f"{'success' if success else 'no success'} after {len(frames) - 1} steps; wrote {out}")


if __name__ == "__main__":
  main()
