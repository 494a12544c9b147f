"""Batched episodes with the student and the teacher in one compiled step.

:func:`rollout` is a ``lax.scan`` over policy steps of a batched suite. At
each step the student samples an action-token chunk from the observation
history, the teacher scores the same observation (inside the same compiled
step), the chunk runs open-loop through the environment for K control steps
(images rendered once, after the chunk), and the step records what the
objectives need. A world whose episode ended stops contributing: its later
tokens are masked (``mask``), and its success and length are kept.

Shapes: T policy steps, B worlds, K chunk, D action dims, V bins.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from opd_jax import models
from opd_jax.policy import Policy, init_history, push_history


@struct.dataclass
class Rollout:
  hist: dict            # observation history per step: {camera: [T, B, H_T, H, W, 3], ...}
  tokens: jax.Array     # int32 [T, B, K, D]
  behaviour_logp: jax.Array  # [T, B, K, D] student log-prob of tokens when sampled
  teacher_logp: Any     # [T, B, K, D, V] or None without a teacher
  mask: jax.Array       # [T, B, K, D] 1 for tokens whose control step ran
  success: jax.Array    # [B] 1 if the episode succeeded
  finished: jax.Array   # [B] 1 if the episode ended (success, time limit or blow-up)
  length: jax.Array     # [B] control steps executed
  task_id: jax.Array    # [B]
  env_metrics: dict     # per-world sums of the suite's metrics over executed control steps

  def batch(self) -> dict:
    """The objectives' inputs (see opd_jax.objectives)."""
    return dict(hist=self.hist, tokens=self.tokens, behaviour_logp=self.behaviour_logp,
                teacher_logp=self.teacher_logp, mask=self.mask)


def check_execute(execute: int | None, chunk: int) -> int:
  """The receding horizon: ``execute`` (None = the whole chunk), refused outside [1, chunk]."""
  execute = chunk if execute is None else int(execute)
  if not 1 <= execute <= chunk:
    raise ValueError(f"execute must be in [1, chunk={chunk}], got {execute}")
  return execute


def rollout(env, student: Policy, params, state, key: jax.Array, num_steps: int, *,
            temperature: float = 1.0, teacher=None, teacher_params=None,
            teacher_temperature: float = 1.0, history: int | None = None,
            execute: int | None = None) -> Rollout:
  """Runs ``num_steps`` policy steps from the batched ``state``.

  env: a batched suite with ``step_chunk`` (envs.core.BatchEnv, no auto-reset:
    an iteration is a batch of episodes). temperature 0 decodes greedily.
  execute: how many of the chunk's K actions run before the policy is queried
    again (receding horizon; default all K). Tokens of the actions not run stay
    in the loss mask while the world is alive: they are still the student's
    samples on its own state, scored by the teacher on the same observation.
  """
  k = student.cfg.chunk
  execute = check_execute(execute, k)
  if student.cfg.history > 1 and execute != k:
    # the world is observed once per executed part of a chunk, and such a policy was trained on
    # frames one chunk apart (opd_jax.data)
    raise ValueError(f"a history-{student.cfg.history} policy sees frames one chunk ({k} steps) "
                     f"apart, as it was trained; execute={execute} would show it frames "
                     f"{execute} apart: run whole chunks")
  if history is None:
    history = max(student.cfg.history, getattr(teacher, "history", 1))
  hist = init_history(state.obs, history)
  b = state.done.shape[0]
  zeros = jnp.zeros((b,), jnp.float32)
  metric_sums = {n: zeros for n in state.metrics}

  def body(carry, t):
    state, hist, alive, success, finished, length, msums = carry
    logits = student.logits(params, hist)
    tokens = models.sample_tokens(logits, jax.random.fold_in(key, t), temperature)
    blogp = models.token_log_probs(logits, tokens, jnp.maximum(temperature, 1e-6))
    t_logp = None
    if teacher is not None:
      t_logits = teacher.logits(teacher_params, state, hist)
      t_logp = jax.nn.log_softmax(jax.lax.stop_gradient(t_logits) / teacher_temperature, -1)
    nxt, executed = env.step_chunk(state, student.actions(tokens[:, :execute]))
    executed = executed * alive[:, None]                       # [B, execute]
    ended = alive * (nxt.done > 0)
    success = jnp.maximum(success, ended * nxt.info["success"])
    finished = jnp.maximum(finished, ended)
    length = length + executed.sum(-1)
    msums = {n: msums[n] + alive * nxt.metrics[n] for n in msums}
    if execute < k:   # the tail that never ran counts while the world was alive
      tail = jnp.broadcast_to(executed[:, -1:], (b, k - execute))
      executed = jnp.concatenate([executed, tail], axis=1)     # [B, K]
    mask = jnp.broadcast_to(executed[:, :, None], tokens.shape).astype(jnp.float32)
    out = dict(hist=hist, tokens=tokens, behaviour_logp=blogp, teacher_logp=t_logp, mask=mask)
    carry = (nxt, push_history(hist, nxt.obs), alive * (1.0 - ended), success, finished,
             length, msums)
    return carry, out

  init = (state, hist, jnp.ones((b,), jnp.float32), zeros, zeros, zeros, metric_sums)
  (state, _, _, success, finished, length, msums), out = jax.lax.scan(
      body, init, jnp.arange(num_steps))
  return Rollout(hist=out["hist"], tokens=out["tokens"], behaviour_logp=out["behaviour_logp"],
                 teacher_logp=out["teacher_logp"], mask=out["mask"], success=success,
                 finished=finished, length=length, task_id=state.info["task_id"],
                 env_metrics=msums)


def episode_metrics(r: Rollout, prefix: str = "rollout/") -> dict[str, jax.Array]:
  """Scalars: success rate of completed episodes, mean length, env counters."""
  n_done = jnp.maximum(r.finished.sum(), 1.0)
  m = {
      "success": jnp.sum(r.success) / n_done,
      "success_all": jnp.mean(r.success),
      "finished": jnp.mean(r.finished),
      "episode_length": jnp.sum(r.length * r.finished) / n_done,
      "control_steps": jnp.sum(r.length),
  }
  for n, v in r.env_metrics.items():
    m[n] = jnp.sum(v) if n.startswith("nonfinite") else jnp.sum(v) / jnp.maximum(r.length.sum(), 1.0)
  return {prefix + k: v for k, v in m.items()}
