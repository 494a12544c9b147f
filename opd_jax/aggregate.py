"""DAgger-style aggregation: the episodes of past iterations, replayed in later updates.

On-policy distillation trains on the states the student visits *now*. Aggregation keeps
every iteration's episodes (states, the student's tokens, the teacher's log-probs over all
bins) in a ring buffer of ``capacity`` worlds, and each update trains on the iteration's own
batch plus ``replay`` worlds drawn uniformly, with replacement, from everything kept so far
(the current batch included), as DAgger trains on the union of the visited states.

Only objectives that read the teacher's whole distribution at a state (exact reverse KL,
forward KL, hard CE) are valid on replayed states: the sampled reverse-KL estimator scores
tokens an older student drew (``Objective.off_policy_ok``; opd_jax.train refuses the rest).

The buffer lives on the devices, sharded over worlds like the batch, and is not checkpointed
(a few MB per world): a resumed run starts it empty and says so.

Shapes: T policy steps, B worlds per iteration, C capacity, R replayed worlds.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from opd_jax.rollout import Batch, world_axis


@struct.dataclass
class Aggregate:
  kept: Batch          # every world-axis field with C worlds (scalars as the last batch's)
  written: jax.Array   # int32 [] worlds written so far (the slot of the next is written % C)


def widen(shapes: Batch, worlds: int) -> Batch:
  """Abstract batch fields with ``worlds`` worlds instead of B (scalars unchanged)."""
  def one(x):
    axis = world_axis(x)
    if axis is None:
      return jax.ShapeDtypeStruct(x.shape, x.dtype)
    shape = list(x.shape)
    shape[axis] = worlds
    return jax.ShapeDtypeStruct(tuple(shape), x.dtype)
  return jax.tree.map(one, shapes)


def empty(shapes: Batch, capacity: int) -> Aggregate:
  """A buffer of ``capacity`` zero worlds shaped like ``shapes`` (a batch or its shapes)."""
  kept = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), widen(shapes, capacity))
  return Aggregate(kept, jnp.zeros((), jnp.int32))


def add_and_sample(agg: Aggregate, batch: Batch, key, replay: int):
  """Writes ``batch``'s B worlds at the next ring slots, then returns ``(agg, train)``:
  ``train`` is ``batch`` with R = ``replay`` worlds drawn from the kept ones appended on the
  world axis ([T, B + R, ...]). C must be a multiple of B (opd_jax.train checks)."""
  capacity = agg.kept.step_mask.shape[1]
  b = batch.step_mask.shape[1]
  start = agg.written % capacity

  def write(k, x):
    axis = world_axis(x)
    return x if axis is None else jax.lax.dynamic_update_slice_in_dim(k, x, start, axis)
  kept = jax.tree.map(write, agg.kept, batch)
  written = agg.written + b
  idx = jax.random.randint(key, (replay,), 0, jnp.minimum(written, capacity))

  def take(x, k):
    axis = world_axis(x)
    return x if axis is None else jnp.concatenate([x, jnp.take(k, idx, axis=axis)], axis=axis)
  return Aggregate(kept, written), jax.tree.map(take, batch, kept)
