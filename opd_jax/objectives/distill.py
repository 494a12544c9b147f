"""Distillation objectives: pure functions ``(out, batch, ...) -> (loss, metrics)``.

Shapes: ``N...`` leading sample axes (policy steps x worlds), ``K`` chunk steps, ``D``
action dims, ``V`` bins. ``out.logits`` [N..., K, D, V] are the student's, recomputed
with the parameters being differentiated; from the batch (opd_jax.rollout.Batch) they read

- ``tokens``         int32   [N..., K, D]     action tokens the student sampled,
- ``mask``           float32 [N..., K, D]     1 for tokens whose control step ran,
- ``behaviour_logp`` float32 [N..., K, D]     student log-prob of ``tokens`` when sampled,
- ``teacher_logp``   float32 [N..., K, D, V]  teacher log-probabilities over bins.

``temperature`` divides the student's logits for its log-probabilities (as when it
sampled). The losses are token means over unmasked tokens (the paper sums tokens and
divides by the number of trajectories; the two differ by a constant factor, which Adam's
normalisation absorbs).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from opd_jax.objectives.common import Metrics, Outputs, gather, masked_mean, token_metrics
from opd_jax.rollout import Batch


def reverse_kl(out: Outputs, batch: Batch, *, temperature: float = 1.0,
               clip_eps: float | None = None) -> tuple[jax.Array, Metrics]:
  """VLA-OPD's sampled estimator (Eq. 6-7).

  Per-token reward ``r = log π_T(a) − log π_S(a)`` on the sampled token, held
  constant (stop-gradient), discount 0, no normalisation; the surrogate is
  ``ratio · r`` with ``ratio = π_S(a) / π_behaviour(a)`` (1 on the first
  epoch, so the gradient is ``∇log π_S(a) · r``). ``clip_eps`` adds PPO
  clipping for several epochs per batch.
  """
  logp = jax.nn.log_softmax(out.logits / temperature, -1)
  tok_logp = gather(logp, batch.tokens)
  reward = jax.lax.stop_gradient(gather(batch.teacher_logp, batch.tokens) - tok_logp)
  ratio = jnp.exp(tok_logp - jax.lax.stop_gradient(batch.behaviour_logp))
  surrogate = ratio * reward
  metrics = token_metrics(logp, batch)
  if clip_eps is not None:
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * reward
    surrogate = jnp.minimum(surrogate, clipped)
    metrics["clip_fraction"] = masked_mean(
        (jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32), batch.mask)
  metrics["token_reward"] = masked_mean(reward, batch.mask)
  metrics["ratio"] = masked_mean(jax.lax.stop_gradient(ratio), batch.mask)
  return -masked_mean(surrogate, batch.mask), metrics


def reverse_kl_exact(out: Outputs, batch: Batch, *, temperature: float = 1.0
                     ) -> tuple[jax.Array, Metrics]:
  """Per-token ``Σ_v p_S(v) (log p_S(v) − log p_T(v))`` summed over all bins:
  the same expected gradient as :func:`reverse_kl` at a fixed state, lower
  variance."""
  logp = jax.nn.log_softmax(out.logits / temperature, -1)
  t_logp = jax.lax.stop_gradient(batch.teacher_logp)
  kl = jnp.sum(jnp.exp(logp) * (logp - t_logp), -1)
  return masked_mean(kl, batch.mask), token_metrics(logp, batch)


def forward_kl(out: Outputs, batch: Batch, *, temperature: float = 1.0
               ) -> tuple[jax.Array, Metrics]:
  """Soft cross-entropy to the teacher, ``−Σ_v p_T(v) log p_S(v)`` (ablation).
  Its gradient equals that of KL(teacher ‖ student)."""
  logp = jax.nn.log_softmax(out.logits / temperature, -1)
  t_logp = jax.lax.stop_gradient(batch.teacher_logp)
  ce = -jnp.sum(jnp.exp(t_logp) * logp, -1)
  return masked_mean(ce, batch.mask), token_metrics(logp, batch)


def hard_ce(out: Outputs, batch: Batch, *, temperature: float = 1.0
            ) -> tuple[jax.Array, Metrics]:
  """DAgger: cross-entropy to the teacher's argmax token (ablation)."""
  logp = jax.nn.log_softmax(out.logits / temperature, -1)
  label = jnp.argmax(batch.teacher_logp, -1)
  return masked_mean(-gather(logp, label), batch.mask), token_metrics(logp, batch)
