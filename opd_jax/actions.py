"""Action normalisation (q01/q99 with a mask) and 256-bin uniform tokenisation.

Continuous actions `[..., D]` are mapped to `[-1, 1]` per dimension with the 1st/99th
percentiles of the training data (dimensions with `mask=False`, such as LIBERO's gripper,
pass through unchanged), then to one of `NUM_BINS` uniform bins over `[-1, 1]`. A token
decodes to its bin centre, so the round trip `[-1, 1] -> token -> [-1, 1]` is exact to
within half a bin width (`1 / NUM_BINS`).

Every function accepts numpy or jax arrays of any leading shape; it computes with jax.numpy
when any input (or the statistics) is a jax array, else with numpy.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

NUM_BINS = 256
# Dimensions whose q99 - q01 is below this are treated as having this range, so a
# constant dimension normalises to -1 and decodes back to its constant, never to NaN.
MIN_RANGE = 1e-6


def _xp(*arrays):
  """jax.numpy if any argument is a jax array (or tracer), else numpy."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


@flax.struct.dataclass
class ActionStats:
  """Per-dimension normalisation statistics.

  q01, q99: float32 [D], the 1st and 99th percentiles.
  mask: bool [D]; True = normalise this dimension, False = leave it as is.
  """
  q01: Any
  q99: Any
  mask: Any

  @property
  def dim(self) -> int:
    return int(np.shape(self.q01)[0])

  def to_dict(self) -> dict:
    """JSON-serialisable form: lists of floats and bools."""
    return {"q01": np.asarray(self.q01, np.float32).tolist(),
            "q99": np.asarray(self.q99, np.float32).tolist(),
            "mask": np.asarray(self.mask, bool).tolist()}

  @classmethod
  def from_dict(cls, d: dict) -> ActionStats:
    missing = [k for k in ("q01", "q99") if k not in d]
    if missing:
      raise ValueError(f"action statistics are missing keys {missing}; "
                       f"expected 'q01', 'q99' and optionally 'mask'")
    return make_stats(d["q01"], d["q99"], d.get("mask"))


def make_stats(q01, q99, mask=None) -> ActionStats:
  """Builds validated ActionStats from array-likes of shape [D] (mask defaults to all True)."""
  q01 = np.asarray(q01, np.float32)
  q99 = np.asarray(q99, np.float32)
  if q01.ndim != 1 or q01.shape != q99.shape:
    raise ValueError(f"q01 and q99 must both have shape [D]; got {q01.shape} and {q99.shape}")
  mask = np.ones(q01.shape, bool) if mask is None else np.asarray(mask)
  if mask.shape != q01.shape:
    raise ValueError(f"mask must have shape {q01.shape} like q01; got {mask.shape}")
  if mask.dtype != bool:
    raise ValueError(f"mask must be boolean (True = normalise); got dtype {mask.dtype}")
  for name, v in (("q01", q01), ("q99", q99)):
    if not np.all(np.isfinite(v)):
      raise ValueError(f"action statistics {name} has non-finite entries at dims "
                       f"{np.flatnonzero(~np.isfinite(v)).tolist()}")
  if np.any(q99 < q01):
    raise ValueError(f"action statistics need q99 >= q01; violated at dims "
                     f"{np.flatnonzero(q99 < q01).tolist()}")
  return ActionStats(q01=q01, q99=q99, mask=mask)


def compute_stats(actions: np.ndarray, mask=None) -> ActionStats:
  """Statistics from a dataset of actions.

  Args:
    actions: [N, D] float actions (all finite).
    mask: optional bool [D]; False leaves that dim unnormalised (e.g. LIBERO gripper, dim 6).
  """
  actions = np.asarray(actions, np.float64)
  if actions.ndim != 2 or actions.shape[0] == 0:
    raise ValueError(f"actions must have shape [N, D] with N >= 1; got {actions.shape}")
  if not np.all(np.isfinite(actions)):
    raise ValueError("actions contain non-finite values (NaN or inf)")
  q01 = np.quantile(actions, 0.01, axis=0)
  q99 = np.quantile(actions, 0.99, axis=0)
  return make_stats(q01, q99, mask)


def _check_dim(stats: ActionStats, a, what: str):
  d = np.shape(stats.q01)[-1]
  if np.ndim(a) < 1 or np.shape(a)[-1] != d:
    raise ValueError(f"{what} must have shape [..., {d}] to match the action statistics; "
                     f"got {np.shape(a)}")


def _range(xp, stats: ActionStats):
  return xp.maximum(xp.asarray(stats.q99) - xp.asarray(stats.q01), MIN_RANGE)


def normalize(stats: ActionStats, a):
  """[..., D] actions -> [..., D]; masked dims mapped to [-1, 1] (clipped), others unchanged."""
  _check_dim(stats, a, "actions")
  xp = _xp(a, stats.q01)
  a = xp.asarray(a, xp.float32)
  n = 2.0 * (a - xp.asarray(stats.q01)) / _range(xp, stats) - 1.0
  n = xp.clip(n, -1.0, 1.0)
  return xp.where(xp.asarray(stats.mask), n, a).astype(xp.float32)


def unnormalize(stats: ActionStats, a):
  """Inverse of `normalize` on [..., D] (exact for values inside [q01, q99])."""
  _check_dim(stats, a, "normalised actions")
  xp = _xp(a, stats.q01)
  a = xp.asarray(a, xp.float32)
  u = (a + 1.0) * 0.5 * _range(xp, stats) + xp.asarray(stats.q01)
  return xp.where(xp.asarray(stats.mask), u, a).astype(xp.float32)


def to_tokens(a_norm):
  """[...] values in [-1, 1] (clipped) -> int32 bin indices in [0, NUM_BINS - 1]."""
  xp = _xp(a_norm)
  a = xp.clip(xp.asarray(a_norm, xp.float32), -1.0, 1.0)
  idx = xp.floor((a + 1.0) * (0.5 * NUM_BINS))
  return xp.clip(idx, 0, NUM_BINS - 1).astype(xp.int32)


def from_tokens(tokens):
  """[...] int bin indices -> float32 bin centres in (-1, 1).

  Concrete numpy tokens outside [0, NUM_BINS) raise ValueError; traced ones are clipped.
  """
  xp = _xp(tokens)
  if xp is np:
    tokens = np.asarray(tokens)
    if not np.issubdtype(tokens.dtype, np.integer):
      raise ValueError(f"tokens must be integers; got dtype {tokens.dtype}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= NUM_BINS):
      raise ValueError(f"tokens must lie in [0, {NUM_BINS - 1}]; got range "
                       f"[{tokens.min()}, {tokens.max()}]")
  t = xp.clip(tokens, 0, NUM_BINS - 1).astype(xp.float32)
  return ((t + 0.5) * (2.0 / NUM_BINS) - 1.0).astype(xp.float32)


def encode(stats: ActionStats, a):
  """[..., D] raw actions -> int32 [..., D] tokens (normalise, then bin)."""
  return to_tokens(normalize(stats, a))


def decode(stats: ActionStats, tokens):
  """int [..., D] tokens -> float32 [..., D] raw actions (bin centre, then unnormalise)."""
  return unnormalize(stats, from_tokens(tokens))
