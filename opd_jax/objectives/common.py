"""Pieces every objective uses: the student's outputs, masked means, token diagnostics."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from opd_jax.rollout import Batch

Metrics = dict[str, jax.Array]


@struct.dataclass
class Outputs:
  """The student's outputs on a minibatch, recomputed with the parameters being differentiated.

  logits [N..., K, D, V] (None for a Gaussian student); value [N...] (None without a value
  head); a Gaussian student's mean and log_std [N..., K, D] (normalised action units)."""
  logits: Any
  value: Any = None
  mean: Any = None
  log_std: Any = None

  @classmethod
  def of(cls, out: dict) -> "Outputs":
    """From the model's output dict (models.OctoPolicy / CNNGaussianPolicy)."""
    return cls(out.get("logits"), out.get("value"), out.get("mean"), out.get("log_std"))


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def gather(logp: jax.Array, tokens: jax.Array) -> jax.Array:
  """[..., V] log-probs at int [...] tokens -> [...]."""
  return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]


def token_metrics(logp: jax.Array, batch: Batch) -> Metrics:
  """Diagnostics shared by every objective (no gradient flows through them).

  entropy: student entropy per token (nats); reverse_kl: exact
  KL(student ‖ teacher) per token; teacher_agreement: fraction of tokens whose
  student argmax equals the teacher's; sampled_teacher_logp: teacher log-prob
  of the tokens the student sampled.
  """
  logp = jax.lax.stop_gradient(logp)
  mask = batch.mask
  p = jnp.exp(logp)
  entropy = -jnp.sum(p * logp, -1)
  if batch.teacher_logp is None:
    return {"entropy": masked_mean(entropy, mask), "tokens": jnp.sum(mask)}
  t_logp = batch.teacher_logp
  rkl = jnp.sum(p * (logp - t_logp), -1)
  agree = (jnp.argmax(logp, -1) == jnp.argmax(t_logp, -1)).astype(jnp.float32)
  return {
      "entropy": masked_mean(entropy, mask),
      "reverse_kl": masked_mean(rkl, mask),
      "teacher_agreement": masked_mean(agree, mask),
      "sampled_teacher_logp": masked_mean(gather(t_logp, batch.tokens), mask),
      "tokens": jnp.sum(mask),
  }
