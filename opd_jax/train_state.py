"""What every trainer shares: the train state, the optimiser, the guarded update, resume.

``guarded_update(loss_fn, tx)`` is the one gradient step of SFT and OPD: the loss's
gradient applied with Optax unless the loss or any gradient is non-finite, in which
case parameters and optimiser state are kept and the skip is counted.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from etils import epath
from flax import struct

from opd_jax import checkpoint, parallel


@struct.dataclass
class TrainState:
  step: jax.Array               # gradient steps taken (SFT) or iterations done (OPD)
  params: Any
  opt_state: Any
  nonfinite_updates: jax.Array  # updates skipped because loss or gradients were not finite


def abstract_state(params, tx) -> TrainState:
  """The shapes and types of a train state of ``params`` under optimiser ``tx``."""
  return jax.eval_shape(lambda p: TrainState(jnp.int32(0), p, tx.init(p), jnp.int32(0)), params)


def make_optimizer(o, total_steps: int | None = None) -> optax.GradientTransformation:
  """``o.optimizer``: "adamw" (default) or "sgd"; linear warm-up, global-norm clipping.

  ``o.schedule``: "constant" after the warm-up (default), or "cosine": decays to
  ``o.final_lr_frac`` x lr at ``total_steps``.
  """
  warm = max(o.warmup, 1)
  kind = o.get("schedule", "constant")
  if kind == "constant":
    after = optax.constant_schedule(o.lr)
  elif kind == "cosine":
    if not total_steps or total_steps <= warm:
      raise ValueError(f"config.optim.schedule='cosine' needs more steps ({total_steps}) than "
                       f"optim.warmup ({o.warmup})")
    after = optax.cosine_decay_schedule(o.lr, total_steps - warm,
                                        alpha=o.get("final_lr_frac", 0.1))
  else:
    raise ValueError(f"config.optim.schedule must be 'constant' or 'cosine', got {kind!r}")
  sched = optax.join_schedules([optax.linear_schedule(0.0, o.lr, warm), after], [warm])
  name = o.get("optimizer", "adamw")
  if name == "adamw":
    opt = optax.adamw(sched, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)
  elif name == "sgd":
    opt = optax.sgd(sched)
  else:
    raise ValueError(f"config.optim.optimizer must be 'adamw' or 'sgd', got {name!r}")
  return optax.chain(optax.clip_by_global_norm(o.grad_clip), opt)


def guarded_update(loss_fn: Callable, tx: optax.GradientTransformation):
  """``update(ts, *args) -> (ts, metrics)`` for ``loss_fn(params, *args) -> (loss, metrics)``.

  metrics gain ``loss`` and ``grad_norm`` (inf/NaN when any gradient entry is); ``ts.step``
  is left to the caller."""
  def update(ts: TrainState, *args):
    (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(ts.params, *args)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, ts.opt_state, ts.params)
    new_params = optax.apply_updates(ts.params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    bad = ts.nonfinite_updates + 1 - finite.astype(jnp.int32)
    m = dict(m, loss=loss, grad_norm=grad_norm)
    return ts.replace(params=keep(new_params, ts.params), opt_state=keep(new_opt, ts.opt_state),
                      nonfinite_updates=bad), m
  return update


def restore_or_init(workdir: str, keep: int, params, tx, meta: dict, sharding, *,
                    compare=("model",)) -> tuple[TrainState, Any, dict]:
  """The run's state: the newest complete and readable checkpoint under
  ``workdir/checkpoints`` (refused when its ``compare`` meta entries differ from ``meta``'s),
  else ``params`` with a fresh optimiser. Newer checkpoints that cannot be read (torn by a
  kill, truncated, corrupt) are named in one line each and set aside as
  ``STEP.unreadable`` (kept, never deleted; a later save of that step cannot collide with
  them). Returns (state placed on ``sharding``, the checkpoint manager, the restored meta or
  {})."""
  directory = os.path.join(workdir, "checkpoints")
  mgr = checkpoint.manager(directory, max_to_keep=keep)
  abstract_opt = jax.eval_shape(tx.init, params)
  unreadable, found = [], None
  for step in sorted(mgr.all_steps(), reverse=True):
    try:
      found = (step, *checkpoint.restore(mgr, step, params, abstract_opt, sharding))
    except checkpoint.CheckpointError as e:
      problem = _check_model(directory, step, meta, compare)   # another model: the user's call
      if problem:
        raise checkpoint.CheckpointError(problem) from e
      unreadable.append((step, str(e).split(". It is corrupt")[0]))
      continue
    break
  if unreadable:
    mgr.close()
    for step, why in unreadable if parallel.is_main() else ():
      aside = epath.Path(directory) / f"{step}.unreadable"
      n = 1
      while aside.exists():
        aside, n = epath.Path(directory) / f"{step}.unreadable{n}", n + 1
      (epath.Path(directory) / str(step)).rename(aside)
      print(f"skipping checkpoint {step}, set aside as {aside}: {why}", file=sys.stderr)
    parallel.barrier("checkpoints set aside")
    mgr = checkpoint.manager(directory, max_to_keep=keep)
  if found is None:
    ts = TrainState(jnp.int32(0), params, tx.init(params), jnp.int32(0))
    return parallel.put(jax.tree.map(jnp.copy, ts), sharding), mgr, {}
  start, params, opt_state, old = found
  checkpoint.check_format(old, f"{directory}/{start}")
  problem = _check_model(directory, start, meta, compare, old)
  if problem:
    raise checkpoint.CheckpointError(problem)
  ts = TrainState(jnp.int32(start), params, opt_state, jnp.int32(int(old.get("nonfinite_updates", 0))))
  return parallel.put(jax.tree.map(jnp.copy, ts), sharding), mgr, old


def _check_model(directory: str, step: int, meta: dict, compare, old: dict | None = None) -> str:
  """Why checkpoint ``step`` belongs to another run ('' when it does not, or when its meta is
  unreadable too)."""
  if old is None:
    try:
      old = checkpoint.read_meta(os.path.join(directory, str(step)))[0]
    except checkpoint.CheckpointError:
      return ""
  saved = dict(old, model=checkpoint.saved_model(old))
  for k in compare:
    if saved.get(k) != meta.get(k):
      return (f"{directory}/{step} holds a different {k} ({old.get(k)}) than this run "
              f"({meta.get(k)}); use another config.workdir")
  return ""
