"""Greedy evaluation on the fixed evaluation initial states.

  python -m opd_jax.evaluate --config.checkpoint=runs/opd_object --config.episodes=50 \\
      [--config.suite=libero_object --config.out=runs/opd_object/eval_final]

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
from etils import epath

from opd_jax import compiling, parallel, traced
from opd_jax.rollout import check_execute, rollout


class Evaluator:
  """Compiles one greedy episode batch function per (suite, policy) and reuses it."""

  def __init__(self, env, policy, *, episodes_per_task: int, batch: int, num_steps: int | None = None,
               execute: int | None = None, compiler_options: dict | None = None,
               tasks: tuple[int, ...] = (), mesh=None):
    if episodes_per_task < 1:
      raise ValueError(f"config.eval.episodes_per_task must be >= 1, got {episodes_per_task}")
    if batch < 1:
      raise ValueError(f"config.eval.batch must be >= 1, got {batch}")
    self.env, self.policy = env, policy
    self.episodes = episodes_per_task
    self.tasks = tuple(tasks) or tuple(range(env.num_tasks))   # the task ids evaluated
    # on a mesh the episodes are split over its devices (and processes), so the batch is
    # rounded up to a multiple of them (the padding repeats the last episode)
    self.mesh = mesh
    n_dev = 1 if mesh is None else mesh.devices.size
    self.batch = -(-batch // n_dev) * n_dev
    self.execute = check_execute(execute, policy.cfg.chunk)
    self.num_steps = num_steps or math.ceil(env.max_episode_steps / self.execute)
    self._compiler_options = compiler_options
    self._run = jax.jit(self._episodes)
    self._compiled = None
    self.compiles = 0   # programs compiled (or loaded from the persistent cache): 1 when reused

  def _episodes(self, params, tasks, index):
    state = jax.vmap(self.env.env.reset_eval)(tasks, index)
    r = rollout(self.env, self.policy, params, state, jax.random.PRNGKey(0), self.num_steps,
                temperature=0.0, execute=self.execute)
    frames = jnp.concatenate([r.hist.images[c][:, :, -1] for c in self.policy.cfg.cameras],
                             axis=-2)
    return r.success, r.length, frames  # frames [T, B, H, W * cams, 3]

  def __call__(self, params, videos: int = 0, progress: bool = False) -> dict[str, Any]:
    n_tasks = len(self.tasks)
    pairs = [(t, i) for t in self.tasks for i in range(self.episodes)]
    succ = np.zeros(len(pairs))
    length = np.zeros(len(pairs))
    clips = []
    bar = None
    if progress:
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      bar = tqdm(total=len(pairs), desc="evaluate", unit="episode", dynamic_ncols=True)
    for start in range(0, len(pairs), self.batch):
      part = pairs[start:start + self.batch]
      padded = part + [part[-1]] * (self.batch - len(part))
      tasks = np.asarray([p[0] for p in padded], np.int32)
      index = np.asarray([p[1] for p in padded], np.int32)
      if self.mesh is not None:
        tasks, index = (parallel.place(a, parallel.batch_sharding(self.mesh))
                        for a in (tasks, index))
      if self._compiled is None:
        self._compiled, = compiling.compile_programs(
            [("the evaluator", self._run, (params, tasks, index))],
            context=traced.fingerprint(self.env, self.policy, self.num_steps, self.execute),
            compiler_options=self._compiler_options)
        self.compiles += 1
      s, ln, frames = self._compiled(params, tasks, index)
      ln = parallel.to_host(ln)
      succ[start:start + len(part)] = parallel.to_host(s)[:len(part)]
      length[start:start + len(part)] = ln[:len(part)]
      if len(clips) < videos:
        frames = parallel.to_host(frames)
      for j in range(len(part)):
        if len(clips) < videos:
          steps = max(1, math.ceil(float(ln[j]) / self.execute)) + 1
          clips.append((part[j], frames[:steps, j]))
      if bar is not None:
        bar.update(len(part))
        bar.set_postfix(success=f"{succ[:start + len(part)].mean():.2f}")
    if bar is not None:
      bar.close()
    per_task = succ.reshape(n_tasks, self.episodes).mean(1)
    return dict(success=float(per_task.mean()), per_task=per_task.tolist(),
                episode_length=float(length.mean()), episodes_per_task=self.episodes,
                execute=self.execute,
                instructions=[self.env.instructions[t] for t in self.tasks],
                task_ids=list(self.tasks), clips=clips)


def write_report(result: dict, out_dir: str, title: str = "") -> str:
  """results.json, results.md and episode GIFs under ``out_dir``; returns the Markdown."""
  out = epath.Path(out_dir)   # local or object storage
  out.mkdir(parents=True, exist_ok=True)
  lines = [f"## {title or 'Evaluation'}", "",
           f"Greedy, {result['episodes_per_task']} fixed initial states per task; "
           f"{result.get('execute', '?')} actions of each chunk run before re-planning.", "",
           "| task | instruction | success |", "|---|---|---|"]
  ids = result.get("task_ids", range(len(result["per_task"])))
  for t, s, ins in zip(ids, result["per_task"], result["instructions"]):
    lines.append(f"| {t} | {ins} | {100 * s:.0f}% |")
  lines.append(f"| **avg** | | **{100 * result['success']:.1f}%** |")
  md = "\n".join(lines) + "\n"
  (out / "results.md").write_text(md)
  (out / "results.json").write_text(
      json.dumps({k: v for k, v in result.items() if k != "clips"}, indent=1))
  if result.get("clips"):
    import imageio.v2 as imageio  # pylint: disable=import-outside-toplevel
    for (task, i), frames in result["clips"]:
      (out / f"task{task}_ep{i}.gif").write_bytes(
          imageio.mimwrite("<bytes>", list(frames), format="GIF", duration=0.4, loop=0))
  return md


def default_config():
  """``python -m opd_jax.evaluate --config.checkpoint=PATH [--config.episodes=50 ...]``."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  return ml_collections.ConfigDict(dict(
      checkpoint="",     # a run's workdir, its checkpoints dir, a step dir or a shipped policy
      suite="",          # default: the checkpoint's
      episodes=50,       # fixed evaluation initial states per task
      batch=25,          # worlds rolled together
      videos=3,          # GIFs written
      execute=0,         # actions of each chunk run before re-planning (0: the whole chunk)
      tasks="",          # comma-separated task ids ("" = every task), e.g. held-out tasks
      physics="mjx",     # "mjx" | "c" (MuJoCo's C engine: CPU hosts, ~5x faster there)
      out=""))           # default: CHECKPOINT/eval


def validate(config, overrides=()) -> None:
  del overrides
  from opd_jax import cli  # pylint: disable=import-outside-toplevel
  if not config.checkpoint:
    raise cli.UsageError("config.checkpoint: give the policy to evaluate, e.g. "
                         "--config.checkpoint=runs/opd_object")
  for field in ("episodes", "batch"):
    if config[field] < 1:
      raise cli.UsageError(f"config.{field}: must be >= 1, got {config[field]}")
  if config.videos < 0 or config.execute < 0:
    raise cli.UsageError("config.videos and config.execute must be >= 0")
  parse_tasks(config.tasks)
  from envs.tabletop import PHYSICS_BACKENDS  # pylint: disable=import-outside-toplevel
  if config.physics not in PHYSICS_BACKENDS:
    raise cli.UsageError(f"config.physics: must be one of {PHYSICS_BACKENDS}, got "
                         f"{config.physics!r}")


def parse_tasks(text: str) -> tuple[int, ...]:
  from opd_jax import cli  # pylint: disable=import-outside-toplevel
  try:
    return tuple(int(t) for t in str(text).split(",") if t.strip())
  except ValueError:
    raise cli.UsageError(f"config.tasks: comma-separated task ids, e.g. 5,6,7, got "
                         f"{text!r}") from None


def main(inv) -> dict:
  import envs  # pylint: disable=import-outside-toplevel
  from envs.core import BatchEnv  # pylint: disable=import-outside-toplevel
  from opd_jax import checkpoint, cli  # pylint: disable=import-outside-toplevel
  from opd_jax.policy import Policy, check_obs_matches  # pylint: disable=import-outside-toplevel
  c = inv.config
  out = c.out or os.path.join(c.checkpoint, "eval")
  print(cli.describe(inv, f"{out}/ (results.md, results.json, GIFs)"))
  with cli.usage_errors():
    graphdef, params, cfg, stats, meta = checkpoint.load_policy(c.checkpoint)
    suite = c.suite or meta.get("suite", "")
    if not suite:
      raise cli.UsageError("config.suite: the checkpoint does not name its suite; give one")
    env_kw = checkpoint.trained_env_kwargs(meta)
    env_kw["image_size"] = cfg.image_size
    env = BatchEnv(envs.make(suite, **env_kw, physics=c.physics))
    check_obs_matches(cfg, env.env, "evaluated", meta)
    policy = Policy.build(graphdef, cfg, stats, env.instructions)
    tasks = parse_tasks(c.tasks)
    bad = [t for t in tasks if not 0 <= t < env.num_tasks]
    if bad:
      raise cli.UsageError(f"config.tasks: {bad} out of range: {suite} has tasks "
                           f"0..{env.num_tasks - 1}")
    ev = Evaluator(env, policy, episodes_per_task=c.episodes, batch=c.batch,
                   execute=c.execute or None, tasks=tasks)
  result = ev(params, videos=c.videos, progress=True)
  physics = (f"{c.physics} physics; control {env_kw['control']}, "
             f"{env_kw['solver_iterations']} solver iterations, as trained")
  print(write_report(result, out, f"{suite}: {c.checkpoint} ({physics})"))
  print(f"wrote {out}")
  return result


if __name__ == "__main__":
  from opd_jax import cli  # pylint: disable=import-outside-toplevel
  cli.run("evaluate", main, default_config=default_config, validate=validate)
