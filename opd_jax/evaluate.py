"""Greedy evaluation on the fixed evaluation initial states.

  python -m opd_jax.evaluate --checkpoint runs/opd_spatial --suite libero_spatial \\
      --episodes 50 --out runs/opd_spatial/eval_final

Writes ``results.json`` and ``results.md`` (success per task) and GIFs of a few
episodes (both cameras side by side, one frame per executed action chunk).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from opd_jax.rollout import check_execute, rollout


class Evaluator:
  """Compiles one greedy episode batch function per (suite, policy) and reuses it."""

  def __init__(self, env, policy, *, episodes_per_task: int, batch: int, num_steps: int | None = None,
               execute: int | None = None):
    if episodes_per_task < 1:
      raise ValueError(f"config.eval.episodes_per_task must be >= 1, got {episodes_per_task}")
    if batch < 1:
      raise ValueError(f"config.eval.batch must be >= 1, got {batch}")
    self.env, self.policy = env, policy
    self.episodes = episodes_per_task
    self.batch = batch
    self.execute = check_execute(execute, policy.cfg.chunk)
    self.num_steps = num_steps or math.ceil(env.max_episode_steps / self.execute)
    self._run = jax.jit(self._episodes)

  def _episodes(self, params, tasks, index):
    state = jax.vmap(self.env.env.reset_eval)(tasks, index)
    r = rollout(self.env, self.policy, params, state, jax.random.PRNGKey(0), self.num_steps,
                temperature=0.0, execute=self.execute)
    frames = jnp.concatenate([r.hist[c][:, :, -1] for c in self.policy.cfg.cameras], axis=-2)
    return r.success, r.length, frames  # frames [T, B, H, W * cams, 3]

  def __call__(self, params, videos: int = 0) -> dict[str, Any]:
    n_tasks = self.env.num_tasks
    pairs = [(t, i) for t in range(n_tasks) for i in range(self.episodes)]
    succ = np.zeros(len(pairs))
    length = np.zeros(len(pairs))
    clips = []
    for start in range(0, len(pairs), self.batch):
      part = pairs[start:start + self.batch]
      padded = part + [part[-1]] * (self.batch - len(part))
      tasks = jnp.asarray([p[0] for p in padded], jnp.int32)
      index = jnp.asarray([p[1] for p in padded], jnp.int32)
      s, ln, frames = self._run(params, tasks, index)
      succ[start:start + len(part)] = np.asarray(s)[:len(part)]
      length[start:start + len(part)] = np.asarray(ln)[:len(part)]
      for j in range(len(part)):
        if len(clips) < videos:
          steps = max(1, math.ceil(float(ln[j]) / self.execute)) + 1
          clips.append((part[j], np.asarray(frames[:steps, j])))
    per_task = succ.reshape(n_tasks, self.episodes).mean(1)
    return dict(success=float(per_task.mean()), per_task=per_task.tolist(),
                episode_length=float(length.mean()), episodes_per_task=self.episodes,
                execute=self.execute,
                instructions=list(self.env.instructions), clips=clips)


def write_report(result: dict, out_dir: str, title: str = "") -> str:
  """results.json, results.md and episode GIFs under ``out_dir``; returns the Markdown."""
  os.makedirs(out_dir, exist_ok=True)
  lines = [f"## {title or 'Evaluation'}", "",
           f"Greedy, {result['episodes_per_task']} fixed initial states per task; "
           f"{result.get('execute', '?')} actions of each chunk run before re-planning.", "",
           "| task | instruction | success |", "|---|---|---|"]
  for t, (s, ins) in enumerate(zip(result["per_task"], result["instructions"])):
    lines.append(f"| {t} | {ins} | {100 * s:.0f}% |")
  lines.append(f"| **avg** | | **{100 * result['success']:.1f}%** |")
  md = "\n".join(lines) + "\n"
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write(md)
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump({k: v for k, v in result.items() if k != "clips"}, f, indent=1)
  if result.get("clips"):
    import imageio.v2 as imageio  # pylint: disable=import-outside-toplevel
    for (task, i), frames in result["clips"]:
      imageio.mimsave(os.path.join(out_dir, f"task{task}_ep{i}.gif"), list(frames), duration=0.4,
                      loop=0)
  return md


def main(argv=None):
  import argparse  # pylint: disable=import-outside-toplevel

  import envs  # pylint: disable=import-outside-toplevel
  from envs.core import BatchEnv  # pylint: disable=import-outside-toplevel
  from opd_jax import checkpoint  # pylint: disable=import-outside-toplevel
  from opd_jax.policy import Policy, check_obs_matches  # pylint: disable=import-outside-toplevel

  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--checkpoint", required=True, help="run workdir, checkpoints dir or step dir")
  ap.add_argument("--suite", default="", help="suite name (default: the checkpoint's)")
  ap.add_argument("--episodes", type=int, default=50, help="initial states per task")
  ap.add_argument("--batch", type=int, default=25)
  ap.add_argument("--videos", type=int, default=3)
  ap.add_argument("--execute", type=int, default=0,
                  help="actions of each chunk run before re-planning (default: the whole chunk)")
  ap.add_argument("--out", default="", help="output dir (default CHECKPOINT/eval)")
  args = ap.parse_args(argv)
  graphdef, params, cfg, stats, meta = checkpoint.load_policy(args.checkpoint)
  suite = args.suite or meta.get("suite", "")
  if not suite:
    raise SystemExit("--suite is required: the checkpoint does not name its suite")
  env_kw = checkpoint.trained_env_kwargs(meta)
  env_kw["image_size"] = cfg.image_size
  env = BatchEnv(envs.make(suite, **env_kw))
  check_obs_matches(cfg, env.env, "evaluated", meta)
  policy = Policy.build(graphdef, cfg, stats, env.instructions)
  ev = Evaluator(env, policy, episodes_per_task=args.episodes, batch=args.batch,
                 execute=args.execute or None)
  result = ev(params, videos=args.videos)
  out = args.out or os.path.join(args.checkpoint, "eval")
  physics = f"control {env_kw['control']}, {env_kw['solver_iterations']} solver iterations, as trained"
  print(write_report(result, out, f"{suite}: {args.checkpoint} ({physics})"))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
