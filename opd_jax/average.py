"""Averages the parameters of several checkpoints of one run into a new policy.

  python -m opd_jax.average --checkpoints runs/opd_s4_ckpt/checkpoints --steps 1000:1200 \\
      --out runs/opd_s4_avg

A tail average (as in stochastic weight averaging): on-policy training at a
constant learning rate leaves the policy moving from one checkpoint to the
next, and the mean of the last few is a steadier policy than any one of them,
chosen without looking at evaluation results. Every checkpoint must describe
the same model and action statistics. The output is an ordinary
self-describing checkpoint (parameters only, no optimiser state) that
``opd_jax.evaluate`` and the checkpoint teacher load; its meta lists the
averaged steps under ``averaged_from``.
"""
from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp

from opd_jax import checkpoint, models


def steps_in(directory: str, spec: str) -> list[int]:
  """Checkpoint steps under ``directory`` selected by ``A:B`` (inclusive) or ``s1,s2,...``."""
  have = sorted(int(d) for d in os.listdir(directory)
                if d.isdigit() and os.path.isdir(os.path.join(directory, d, "meta")))
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
  """``(graphdef, mean params, cfg, stats, meta of the last)`` over checkpoint step dirs."""
  first = None
  total = None
  for p in paths:
    graphdef, params, cfg, stats, meta = checkpoint.load_policy(p)
    if first is None:
      first = (graphdef, cfg, stats)
    elif (cfg, stats.to_dict()) != (first[1], first[2].to_dict()):
      raise checkpoint.CheckpointError(
          f"{p} holds a different model or action statistics than {paths[0]}; only checkpoints "
          f"of one architecture can be averaged")
    total = params if total is None else jax.tree.map(jnp.add, total, params)
  # Floating leaves are averaged; any other leaf (none in today's policies) is the last one's.
  mean = jax.tree.map(
      lambda s, x: s / len(paths) if jnp.issubdtype(x.dtype, jnp.inexact) else x, total, params)
  return first[0], mean, first[1], first[2], meta


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--checkpoints", required=True, help="a run's checkpoints directory (or workdir)")
  ap.add_argument("--steps", required=True, help="A:B (inclusive range) or a comma list")
  ap.add_argument("--out", required=True, help="new workdir; written to OUT/checkpoints/LAST")
  args = ap.parse_args(argv)
  directory = args.checkpoints
  if os.path.isdir(os.path.join(directory, "checkpoints")):
    directory = os.path.join(directory, "checkpoints")
  if not os.path.isdir(directory):
    raise SystemExit(f"--checkpoints {directory} does not exist")
  chosen = steps_in(directory, args.steps)
  if os.path.exists(os.path.join(args.out, "checkpoints", str(chosen[-1]))):
    raise SystemExit(f"{args.out}/checkpoints/{chosen[-1]} exists; nothing is overwritten")
  _, params, cfg, stats, meta = average([os.path.join(directory, str(s)) for s in chosen])
  meta = dict(meta, model=cfg.to_dict(), action_stats=stats.to_dict(),
              averaged_from=dict(directory=os.path.abspath(directory), steps=chosen))
  mgr = checkpoint.manager(os.path.join(args.out, "checkpoints"), max_to_keep=None)
  checkpoint.save(mgr, chosen[-1], params, meta)
  print(f"averaged {len(chosen)} checkpoints {chosen} ({models.param_count(params):,} params) "
        f"-> {args.out}/checkpoints/{chosen[-1]}")


if __name__ == "__main__":
  main()
