"""Distillation objectives: pure functions ``(logits, batch, ...) -> (loss, metrics)``.

Shapes: ``N`` samples (policy steps × worlds, flattened), ``K`` chunk steps,
``D`` action dims, ``V`` bins. Every objective reads from ``batch``:

- ``tokens``       int32   [N, K, D]     action tokens the student sampled,
- ``mask``         float32 [N, K, D]     1 for tokens whose control step ran
                                         (tokens after an episode ended are 0),
- ``behaviour_logp`` float32 [N, K, D]   student log-prob of ``tokens`` when
                                         sampled (for the PPO ratio),
- ``teacher_logp`` float32 [N, K, D, V]  teacher log-probabilities over bins.

``logits`` [N, K, D, V] are the student's, recomputed with the parameters being
differentiated. ``temperature`` divides the student's logits for its
log-probabilities (as when it sampled). Hyper-parameters are keyword arguments
bound with ``functools.partial``; :data:`OBJECTIVES` maps config names to them.

The losses are token means over unmasked tokens (the paper sums tokens and
divides by the number of trajectories; the two differ by a constant factor,
which Adam's normalisation absorbs).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _gather(logp: jax.Array, tokens: jax.Array) -> jax.Array:
  return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]


def token_metrics(logp: jax.Array, batch: Batch) -> Metrics:
  """Diagnostics shared by every objective (no gradient flows through them).

  entropy: student entropy per token (nats); reverse_kl: exact
  KL(student ‖ teacher) per token; teacher_agreement: fraction of tokens whose
  student argmax equals the teacher's; sampled_teacher_logp: teacher log-prob
  of the tokens the student sampled.
  """
  logp = jax.lax.stop_gradient(logp)
  mask = batch["mask"]
  t_logp = batch["teacher_logp"]
  p = jnp.exp(logp)
  entropy = -jnp.sum(p * logp, -1)
  rkl = jnp.sum(p * (logp - t_logp), -1)
  agree = (jnp.argmax(logp, -1) == jnp.argmax(t_logp, -1)).astype(jnp.float32)
  return {
      "entropy": _masked_mean(entropy, mask),
      "reverse_kl": _masked_mean(rkl, mask),
      "teacher_agreement": _masked_mean(agree, mask),
      "sampled_teacher_logp": _masked_mean(_gather(t_logp, batch["tokens"]), mask),
      "tokens": jnp.sum(mask),
  }


def reverse_kl(logits: jax.Array, batch: Batch, *, temperature: float = 1.0,
               clip_eps: float | None = None) -> tuple[jax.Array, Metrics]:
  """VLA-OPD's sampled estimator (Eq. 6-7).

  Per-token reward ``r = log π_T(a) − log π_S(a)`` on the sampled token, held
  constant (stop-gradient), discount 0, no normalisation; the surrogate is
  ``ratio · r`` with ``ratio = π_S(a) / π_behaviour(a)`` (1 on the first
  epoch, so the gradient is ``∇log π_S(a) · r``). ``clip_eps`` adds PPO
  clipping for several epochs per batch.
  """
  logp = jax.nn.log_softmax(logits / temperature, -1)
  tok_logp = _gather(logp, batch["tokens"])
  reward = jax.lax.stop_gradient(_gather(batch["teacher_logp"], batch["tokens"]) - tok_logp)
  ratio = jnp.exp(tok_logp - jax.lax.stop_gradient(batch["behaviour_logp"]))
  surrogate = ratio * reward
  metrics = token_metrics(logp, batch)
  if clip_eps is not None:
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * reward
    surrogate = jnp.minimum(surrogate, clipped)
    metrics["clip_fraction"] = _masked_mean(
        (jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32), batch["mask"])
  metrics["token_reward"] = _masked_mean(reward, batch["mask"])
  metrics["ratio"] = _masked_mean(jax.lax.stop_gradient(ratio), batch["mask"])
  return -_masked_mean(surrogate, batch["mask"]), metrics


def reverse_kl_exact(logits: jax.Array, batch: Batch, *, temperature: float = 1.0
                     ) -> tuple[jax.Array, Metrics]:
  """Per-token ``Σ_v p_S(v) (log p_S(v) − log p_T(v))`` summed over all bins:
  the same expected gradient as :func:`reverse_kl` at a fixed state, lower
  variance."""
  logp = jax.nn.log_softmax(logits / temperature, -1)
  t_logp = jax.lax.stop_gradient(batch["teacher_logp"])
  kl = jnp.sum(jnp.exp(logp) * (logp - t_logp), -1)
  return _masked_mean(kl, batch["mask"]), token_metrics(logp, batch)


def forward_kl(logits: jax.Array, batch: Batch, *, temperature: float = 1.0
               ) -> tuple[jax.Array, Metrics]:
  """Soft cross-entropy to the teacher, ``−Σ_v p_T(v) log p_S(v)`` (ablation).
  Its gradient equals that of KL(teacher ‖ student)."""
  logp = jax.nn.log_softmax(logits / temperature, -1)
  t_logp = jax.lax.stop_gradient(batch["teacher_logp"])
  ce = -jnp.sum(jnp.exp(t_logp) * logp, -1)
  return _masked_mean(ce, batch["mask"]), token_metrics(logp, batch)


def hard_ce(logits: jax.Array, batch: Batch, *, temperature: float = 1.0
            ) -> tuple[jax.Array, Metrics]:
  """DAgger: cross-entropy to the teacher's argmax token (ablation)."""
  logp = jax.nn.log_softmax(logits / temperature, -1)
  label = jnp.argmax(batch["teacher_logp"], -1)
  return _masked_mean(-_gather(logp, label), batch["mask"]), token_metrics(logp, batch)


OBJECTIVES: dict[str, Callable[..., tuple[jax.Array, Metrics]]] = {
    "reverse_kl": reverse_kl,
    "reverse_kl_exact": reverse_kl_exact,
    "forward_kl": forward_kl,
    "hard_ce": hard_ce,
}


def get(name: str, **kwargs) -> Callable[[jax.Array, Batch], tuple[jax.Array, Metrics]]:
  """The objective ``name`` with its hyper-parameters bound."""
  if name not in OBJECTIVES:
    raise ValueError(f"config.objective={name!r} is not one of {sorted(OBJECTIVES)}")
  fn = OBJECTIVES[name]
  if name != "reverse_kl":
    kwargs.pop("clip_eps", None)
  return lambda logits, batch: fn(logits, batch, **kwargs)
