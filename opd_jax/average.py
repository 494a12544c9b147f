"""Averages the parameters of several checkpoints of one run into a new policy.

  python -m opd_jax.average --config.checkpoints=runs/opd_object --config.steps=1000:1200 \\
      --config.out=runs/opd_object_avg

A tail average (as in stochastic weight averaging): on-policy training at a
constant learning rate leaves the policy moving from one checkpoint to the
next, and the mean of the last few is a steadier policy than any one of them,
chosen without looking at evaluation results. Every checkpoint must describe
the same model and action statistics. The output is an ordinary
self-describing checkpoint (parameters only, no optimiser state) that
``opd_jax.evaluate`` and the checkpoint teacher load; its meta lists the
averaged steps under ``averaged_from``. The trainer writes one at the end of a
run with ``config.checkpoint.average``.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from etils import epath

from opd_jax import checkpoint, models, parallel


def steps_in(directory: str, spec: str) -> list[int]:
  """Checkpoint steps under ``directory`` selected by ``A:B`` (inclusive) or ``s1,s2,...``."""
  have = checkpoint.saved_steps(directory)
  if ":" in spec:
    lo, hi = (int(x) for x in spec.split(":"))
    chosen = [s for s in have if lo <= s <= hi]
  else:
    chosen = [int(s) for s in spec.split(",") if s]
    missing = sorted(set(chosen) - set(have))
    if missing:
      raise checkpoint.CheckpointError(f"no checkpoint steps {missing} under {directory} "
                                       f"(it has {have})")
  if len(chosen) < 2:
    raise checkpoint.CheckpointError(f"--steps {spec!r} selects {chosen} of {have} under "
                                     f"{directory}: at least two are needed")
  return chosen


def average(paths: list[str]):
  """``(mean params, meta)`` over checkpoint step dirs; the meta is the last one's, with its
  model and statistics as today's classes write them."""
  first = total = None
  for p in paths:
    _, params, cfg, stats, meta = checkpoint.load_policy(p)
    if first is None:
      first = (cfg, stats.to_dict())
    elif (cfg, stats.to_dict()) != first:
      raise checkpoint.CheckpointError(
          f"{p} holds a different model or action statistics than {paths[0]}; only checkpoints "
          f"of one architecture can be averaged")
    total = params if total is None else jax.tree.map(jnp.add, total, params)
  # Floating leaves are averaged; any other leaf (none in today's policies) is the last one's.
  mean = jax.tree.map(
      lambda s, x: s / len(paths) if jnp.issubdtype(x.dtype, jnp.inexact) else x, total, params)
  return mean, dict(meta, model=first[0].to_dict(), action_stats=first[1])


def write(directory: str, steps: list[int], out: str, sharding=None):
  """Averages ``steps`` of the manager ``directory`` into ``OUT/checkpoints/LAST``, which must
  not exist yet (nothing is overwritten); returns the mean parameters, placed on ``sharding``
  (one, or ``leaf -> sharding``; needed with several processes: a checkpoint holds global
  arrays)."""
  target = os.path.join(out, "checkpoints", str(steps[-1]))
  if epath.Path(target).exists():
    raise checkpoint.CheckpointError(f"{target} exists; nothing is overwritten")
  parallel.barrier("average: target checked")   # before any process starts writing it
  params, meta = average([os.path.join(directory, str(s)) for s in steps])
  if sharding is not None:
    params = parallel.put(params, sharding)
  meta["averaged_from"] = dict(directory=checkpoint.absolute(directory), steps=list(steps))
  checkpoint.save(checkpoint.manager(os.path.join(out, "checkpoints"), max_to_keep=None),
                  steps[-1], params, meta)
  return params


def default_config():
  """``python -m opd_jax.average --config.checkpoints=RUN --config.steps=A:B --config.out=DIR``"""
  import ml_collections  # pylint: disable=import-outside-toplevel
  return ml_collections.ConfigDict(dict(
      checkpoints="",   # a run's workdir or its checkpoints directory
      steps="",         # A:B (inclusive range) or a comma list
      out=""))          # a new workdir; written to OUT/checkpoints/LAST


def validate(config, overrides=()) -> None:
  del overrides
  from opd_jax import cli  # pylint: disable=import-outside-toplevel
  for field, example in (("checkpoints", "runs/opd_object"), ("steps", "1000:1200"),
                         ("out", "runs/opd_object_avg")):
    if not config[field]:
      raise cli.UsageError(f"config.{field}: required, e.g. --config.{field}={example}")


def main(inv):
  from opd_jax import cli  # pylint: disable=import-outside-toplevel
  c = inv.config
  print(cli.describe(inv, f"{c.out}/checkpoints/"))
  directory = c.checkpoints
  if os.path.isdir(os.path.join(directory, "checkpoints")):
    directory = os.path.join(directory, "checkpoints")
  with cli.usage_errors():
    if not os.path.isdir(directory):
      raise cli.UsageError(f"config.checkpoints: {directory} does not exist")
    chosen = steps_in(directory, c.steps)
    params = write(directory, chosen, c.out)
  print(f"averaged {len(chosen)} checkpoints {chosen} ({models.param_count(params):,} params) "
        f"-> {c.out}/checkpoints/{chosen[-1]}")
  return params


if __name__ == "__main__":
  from opd_jax import cli  # pylint: disable=import-outside-toplevel
  cli.run("average", main, default_config=default_config, validate=validate)
