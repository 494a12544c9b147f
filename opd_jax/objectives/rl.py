"""RL objectives: GRPO, PPO, RPD and reverse-KL + GRPO, pure ``(out, batch, ...) -> (loss, metrics)``.

Advantages are estimated once per batch, inside the rollout program, by
:func:`group_advantages` (GRPO) or :func:`gae` (PPO, RPD); the losses read them from the
batch (opd_jax.rollout.Batch), broadcast from policy steps [T, B] to every token of the
step's chunk [T, B, K, D]. All policy losses are token-level PPO-clip against the
behaviour log-probs, as SimpleVLA-RL trains a token VLA:

    L_clip = -mean_tokens min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A),
    rho = pi(a) / pi_behaviour(a)

(the mean over the tokens that ran and belong to kept groups). Hyper-parameters are
keyword arguments bound with ``functools.partial`` (objectives.get).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from opd_jax.objectives.common import Metrics, Outputs, gather, masked_mean, token_metrics
from opd_jax.objectives.distill import reverse_kl_exact
from opd_jax.policy import gaussian_log_prob
from opd_jax.rollout import Batch, expected_action


# ----------------------------------------------------------------------- advantages
def group_advantages(returns: jax.Array, group: int, eps: float = 1e-6
                     ) -> tuple[jax.Array, jax.Array]:
  """GRPO: ``A_i = (R_i - mean_g R) / (std_g R + eps)`` over each group of ``group``
  consecutive worlds (one task, one initial state), std the unbiased sample std.

  returns [B] -> (advantages [B], mixed [B]: 1 where the group's returns differ, the groups
  that carry signal; an all-success or all-failure group has A = 0)."""
  r = returns.reshape(-1, group)
  mean = r.mean(1, keepdims=True)
  std = jnp.sqrt(jnp.sum(jnp.square(r - mean), 1, keepdims=True) / (group - 1))
  adv = (r - mean) / (std + eps)
  mixed = jnp.broadcast_to(std > 1e-6, r.shape).astype(jnp.float32)
  return adv.reshape(-1), mixed.reshape(-1)


def gae(reward: jax.Array, value: jax.Array, done: jax.Array, step_mask: jax.Array, *,
        gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
  """Generalised advantage estimation over policy steps, [T, B] each:

      delta_t = r_t + gamma V_{t+1} (1 - done_t) - V_t
      A_t = delta_t + gamma lam (1 - done_t) A_{t+1}

  An episode that reaches its time limit ends (``done``): the suites' observations do not
  show the time left, so the limit is part of the task. A world still running at the last
  step is bootstrapped with 0. Steps after the end (step_mask 0) get A = 0.
  Returns (advantages, returns = A + V)."""
  def body(carry, x):
    adv_next, v_next = carry
    r, v, d, m = x
    live = 1.0 - d
    delta = r + gamma * v_next * live - v
    adv = (delta + gamma * lam * live * adv_next) * m
    return (adv, v), adv

  zeros = jnp.zeros_like(reward[0])
  _, adv = jax.lax.scan(body, (zeros, zeros), (reward, value, done, step_mask), reverse=True)
  return adv, (adv + value) * step_mask


def normalize(adv: jax.Array, mask: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Advantages standardised over the steps where ``mask`` is 1 (0 elsewhere)."""
  mean = masked_mean(adv, mask)
  std = jnp.sqrt(masked_mean(jnp.square(adv - mean), mask))
  return (adv - mean) / (std + eps) * mask


def cosine_weight(iteration, weight: float, anneal: int) -> jax.Array:
  """RPD's teacher weight: ``weight`` constant (anneal 0), or cosine-annealed from ``weight``
  to 0 over ``anneal`` iterations."""
  if anneal <= 0:
    return jnp.float32(weight)
  frac = jnp.minimum(jnp.asarray(iteration, jnp.float32) / anneal, 1.0)
  return jnp.float32(weight) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))


def refill_plan(keep_a: np.ndarray, keep_b: np.ndarray, group: int) -> tuple[np.ndarray, int]:
  """Dynamic sampling's refill: the groups of batch ``a`` that carry no signal are replaced,
  in order, by the groups of batch ``b`` that do. keep_* [B] (per world, equal within a
  group). Returns (src [B]: the world of concat(a, b) each world takes, groups replaced)."""
  n = len(keep_a) // group
  src = np.arange(len(keep_a))
  empty = [g for g in range(n) if not keep_a[g * group]]
  donors = [g for g in range(n) if keep_b[g * group]]
  for g, d in zip(empty, donors):
    src[g * group:(g + 1) * group] = len(keep_a) + d * group + np.arange(group)
  return src, min(len(empty), len(donors))


# ----------------------------------------------------------------------------- losses
def _per_token(x: jax.Array, like: jax.Array) -> jax.Array:
  """[T, B] -> [T, B, K, D] (every token of a policy step shares the step's value)."""
  return jnp.broadcast_to(x.reshape(x.shape + (1,) * (like.ndim - x.ndim)), like.shape)


def action_log_probs(out: Outputs, batch: Batch, temperature: float
                     ) -> tuple[jax.Array, jax.Array, jax.Array, Metrics]:
  """(log-prob now, log-prob when drawn, weights, entropy metrics) of the student's draws.

  A token student is judged token by token ([T, B, K, D], as SimpleVLA-RL trains a token
  VLA); a Gaussian student by its whole chunk ([T, B], the joint log-density over the
  K x D dims that ran, as PPO trains a continuous policy). Weights: the draws that ran,
  times ``step_weight`` (dynamic sampling)."""
  keep = 1.0 if batch.step_weight is None else batch.step_weight
  if out.logits is not None:
    logp = jax.nn.log_softmax(out.logits / temperature, -1)
    w = batch.mask * (_per_token(keep, batch.mask) if batch.step_weight is not None else 1.0)
    return gather(logp, batch.tokens), batch.behaviour_logp, w, token_metrics(logp, batch)
  lp = gaussian_log_prob(batch.actions, out.mean, out.log_std, temperature)
  joint = lambda x: jnp.sum(x * batch.mask, (-2, -1))  # noqa: E731
  m = {"entropy": jax.lax.stop_gradient(entropy(out, batch, temperature))}
  return joint(lp), joint(batch.behaviour_logp), batch.step_mask * keep, m


def entropy(out: Outputs, batch: Batch, temperature: float) -> jax.Array:
  """The student's entropy per action dim (nats) over the draws that ran, at the sampling
  temperature: over the bins for a token student, the Gaussian's for a Gaussian one."""
  if out.logits is not None:
    lp = jax.nn.log_softmax(out.logits / temperature, -1)
    return masked_mean(-jnp.sum(jnp.exp(lp) * lp, -1), batch.mask)
  per_dim = out.log_std + jnp.log(temperature) + 0.5 * jnp.log(2 * jnp.pi * jnp.e)
  return masked_mean(per_dim, batch.mask)


def clipped_policy_loss(logp: jax.Array, behaviour_logp: jax.Array, advantage: jax.Array,
                        weight: jax.Array, *, clip_low: float, clip_high: float
                        ) -> tuple[jax.Array, Metrics]:
  """PPO-clip with an asymmetric range over draws of any shape (advantage [T, B] is
  broadcast to it), weighted by ``weight``."""
  ratio = jnp.exp(logp - jax.lax.stop_gradient(behaviour_logp))
  adv = _per_token(jax.lax.stop_gradient(advantage), ratio)
  surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv)
  clipped = ((ratio < 1.0 - clip_low) & (adv < 0)) | ((ratio > 1.0 + clip_high) & (adv > 0))
  weight = jnp.broadcast_to(weight, ratio.shape)
  metrics = {"clip_fraction": masked_mean(clipped.astype(jnp.float32), weight),
             "ratio": masked_mean(jax.lax.stop_gradient(ratio), weight),
             "policy_tokens": jnp.sum(weight)}
  return -masked_mean(surrogate, weight), metrics


def _policy_term(out: Outputs, batch: Batch, temperature: float, clip_low: float,
                 clip_high: float, entropy_coef: float) -> tuple[jax.Array, Metrics]:
  logp, blogp, w, m = action_log_probs(out, batch, temperature)
  loss, mc = clipped_policy_loss(logp, blogp, batch.advantage, w, clip_low=clip_low,
                                 clip_high=clip_high)
  if entropy_coef:
    loss = loss - entropy_coef * entropy(out, batch, temperature)
  return loss, dict(m, **mc, **_advantage_metrics(batch))


def _advantage_metrics(batch: Batch) -> Metrics:
  m = batch.step_mask if batch.step_weight is None else batch.step_mask * batch.step_weight
  mean = masked_mean(batch.advantage, m)
  return {"advantage_mean": mean,
          "advantage_std": jnp.sqrt(masked_mean(jnp.square(batch.advantage - mean), m)),
          "advantage_abs_max": jnp.max(jnp.abs(batch.advantage) * m)}


def grpo(out: Outputs, batch: Batch, *, temperature: float = 1.0, clip_low: float = 0.2,
         clip_high: float = 0.28, entropy_coef: float = 0.0) -> tuple[jax.Array, Metrics]:
  """GRPO with the sparse success reward: every token of an episode takes the episode's
  group-normalised advantage (``batch.advantage``, :func:`group_advantages`); groups
  dropped by dynamic sampling have ``step_weight`` 0. No KL term."""
  return _policy_term(out, batch, temperature, clip_low, clip_high, entropy_coef)


def ppo(out: Outputs, batch: Batch, *, temperature: float = 1.0, clip_low: float = 0.2,
        clip_high: float = 0.2, value_coef: float = 0.5, entropy_coef: float = 0.0
        ) -> tuple[jax.Array, Metrics]:
  """PPO: the clipped policy loss on GAE advantages plus ``value_coef x 1/2 (V - R)^2``
  over the steps that ran (``out.value`` from the value head on the readout embedding)."""
  if out.value is None:
    raise ValueError("objective 'ppo' needs the student's value head (config.student.value_head)")
  pg, m = _policy_term(out, batch, temperature, clip_low, clip_high, entropy_coef)
  v_loss = 0.5 * masked_mean(jnp.square(out.value - batch.returns), batch.step_mask)
  resid = masked_mean(jnp.square(batch.returns - batch.value), batch.step_mask)
  ret_var = masked_mean(jnp.square(batch.returns - masked_mean(batch.returns, batch.step_mask)),
                        batch.step_mask)
  m = dict(m, policy_loss=pg, value_loss=v_loss,
           explained_variance=1.0 - resid / jnp.maximum(ret_var, 1e-8))
  return pg + value_coef * v_loss, m


def teacher_mse(out: Outputs, batch: Batch, *, temperature: float = 1.0) -> jax.Array:
  """RPD's guidance term: ``mean ||mu_teacher(s) - mu_student(s)||^2`` over the chunk's
  action dims that ran, both means in normalised action units (a token policy's mean is
  the expectation over its bins)."""
  mu = out.mean if out.logits is None else expected_action(out.logits / temperature)
  return masked_mean(jnp.square(mu - jax.lax.stop_gradient(batch.teacher_mean)), batch.mask)


def rpd(out: Outputs, batch: Batch, *, temperature: float = 1.0, clip_low: float = 0.2,
        clip_high: float = 0.2, value_coef: float = 0.5, entropy_coef: float = 0.0
        ) -> tuple[jax.Array, Metrics]:
  """RPD: PPO plus ``lambda x teacher_mse`` on the student's own minibatch states, lambda
  (``batch.teacher_weight``) constant or cosine-annealed to 0 (RESEARCH.md section 2)."""
  loss, m = ppo(out, batch, temperature=temperature, clip_low=clip_low, clip_high=clip_high,
                value_coef=value_coef, entropy_coef=entropy_coef)
  mse = teacher_mse(out, batch, temperature=temperature)
  return loss + batch.teacher_weight * mse, dict(m, teacher_mse=mse,
                                                 teacher_weight=batch.teacher_weight)


def reverse_kl_grpo(out: Outputs, batch: Batch, *, temperature: float = 1.0,
                    clip_low: float = 0.2, clip_high: float = 0.28, grpo_weight: float = 1.0
                    ) -> tuple[jax.Array, Metrics]:
  """The paper's "Distill + GRPO": the per-token reverse KL to the teacher (its exact form,
  the sampled estimator's expected gradient) plus ``grpo_weight x`` the GRPO loss."""
  kl, m = reverse_kl_exact(out, batch, temperature=temperature)
  g, mg = grpo(out, batch, temperature=temperature, clip_low=clip_low, clip_high=clip_high)
  m = dict(m, **{k: v for k, v in mg.items() if k not in m}, kl_loss=kl, grpo_loss=g)
  return kl + grpo_weight * g, m
