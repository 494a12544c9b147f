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

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from opd_jax import actions as act
from opd_jax.policy import History, Policy, init_history, push_history


@struct.dataclass
class Batch:
  """What the objectives read from a rollout, time-major: T policy steps, B worlds, K chunk,
  D action dims, V bins (an update sees a minibatch of the T axis).

  Fields an objective does not need may be None (no teacher, no value head); the advantage
  fields are filled after the rollout by the objective's estimator (objectives.rl)."""
  hist: History               # observation history, each field [T, B, ...] (images [T, B, H_T, H, W, 3])
  tokens: Any                 # int32 [T, B, K, D] the student's sampled tokens (None for a
                              # Gaussian student, which fills ``actions``)
  behaviour_logp: jax.Array   # [T, B, K, D] log-probs of what it drew (for PPO ratios)
  mask: jax.Array             # [T, B, K, D] 1 for tokens whose control step ran
  step_mask: jax.Array        # [T, B] 1 for policy steps taken while the episode ran
  reward: jax.Array           # [T, B] success (1 at the step it happens) + dense shaping
  done: jax.Array             # [T, B] 1 at the policy step the episode ended
  success: jax.Array          # [B] 1 if the episode succeeded
  actions: Any = None         # [T, B, K, D] a Gaussian student's normalised, unclipped draws
  teacher_logp: Any = None    # [T, B, K, D, V] teacher log-probs over bins
  teacher_mean: Any = None    # [T, B, K, D] teacher's expected normalised action (RPD)
  value: Any = None           # [T, B] the student's value estimate when acting
  advantage: Any = None       # [T, B] per-step advantage (GRPO: the episode's)
  returns: Any = None         # [T, B] value targets (PPO)
  step_weight: Any = None     # [T, B] 0 for worlds dropped by dynamic sampling
  teacher_weight: Any = None  # [] the RPD term's weight this iteration


  def steps(self, start, size: int) -> "Batch":
    """Policy steps ``start:start + size`` (start may be traced) of the time-major fields."""
    cut = lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, 0)  # noqa: E731
    whole = {"success", "teacher_weight"}
    return self.replace(**{f.name: jax.tree.map(cut, getattr(self, f.name))
                           for f in dataclasses.fields(self) if f.name not in whole})


@struct.dataclass
class Rollout:
  batch: Batch
  finished: jax.Array   # [B] 1 if the episode ended (success, time limit or blow-up)
  length: jax.Array     # [B] control steps executed
  task_id: jax.Array    # [B]
  env_metrics: dict     # per-world sums of the suite's metrics over executed control steps

  @property
  def success(self) -> jax.Array:
    return self.batch.success

  @property
  def hist(self) -> History:
    return self.batch.hist


def expected_action(logits: jax.Array) -> jax.Array:
  """[..., V] logits -> [...] the distribution's mean in normalised action units."""
  centres = act.from_tokens(jnp.arange(logits.shape[-1]))
  return jnp.sum(jax.nn.softmax(logits, -1) * centres, -1)


def check_execute(execute: int | None, chunk: int) -> int:
  """The receding horizon: ``execute`` (None = the whole chunk), refused outside [1, chunk]."""
  execute = chunk if execute is None else int(execute)
  if not 1 <= execute <= chunk:
    raise ValueError(f"execute must be in [1, chunk={chunk}], got {execute}")
  return execute


def rollout(env, student: Policy, params, state, key: jax.Array, num_steps: int, *,
            temperature: float = 1.0, teacher=None, teacher_params=None,
            teacher_temperature: float = 1.0, history: int | None = None,
            execute: int | None = None, dense_coef: float = 0.0,
            teacher_scores: bool = True) -> Rollout:
  """Runs ``num_steps`` policy steps from the batched ``state``.

  env: a batched suite with ``step_chunk`` (envs.core.BatchEnv, no auto-reset:
    an iteration is a batch of episodes). temperature 0 decodes greedily.
  execute: how many of the chunk's K actions run before the policy is queried
    again (receding horizon; default all K). Tokens of the actions not run stay
    in the loss mask while the world is alive: they are still the student's
    samples on its own state, scored by the teacher on the same observation.
  dense_coef: weight of the suite's dense shaping in ``reward``, as a potential difference
    (the mean of ``dense_reward`` over the chunk's steps minus the previous chunk's), so it
    rewards progress and sums to a bounded amount whatever the episode's length.
  teacher_scores: record the teacher's log-probs over bins (the distillation objectives);
    its expected action (``teacher_mean``) is recorded whenever there is a teacher.
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

  has_dense = dense_coef and "dense_reward" in state.metrics

  def body(carry, t):
    state, hist, alive, success, finished, length, msums, level = carry
    out = student.outputs(params, hist)
    drawn, blogp = student.sample(out, jax.random.fold_in(key, t), temperature)
    t_logp = t_mean = None
    if teacher is not None:
      t_logits = jax.lax.stop_gradient(teacher.logits(teacher_params, state, hist))
      if teacher_scores:
        t_logp = jax.nn.log_softmax(t_logits / teacher_temperature, -1)
      t_mean = expected_action(t_logits)
    nxt, executed = env.step_chunk(state, student.actions(drawn[:, :execute]))
    executed = executed * alive[:, None]                       # [B, execute]
    ended = alive * (nxt.done > 0)
    won = ended * nxt.info["success"]
    reward = won
    if has_dense:
      now = nxt.metrics["dense_reward"] / jnp.maximum(executed.sum(-1), 1.0)
      reward = reward + alive * dense_coef * (now - level)
      level = jnp.where(alive > 0, now, level)
    success = jnp.maximum(success, won)
    finished = jnp.maximum(finished, ended)
    length = length + executed.sum(-1)
    msums = {n: msums[n] + alive * nxt.metrics[n] for n in msums}
    if execute < k:   # the tail that never ran counts while the world was alive
      tail = jnp.broadcast_to(executed[:, -1:], (b, k - execute))
      executed = jnp.concatenate([executed, tail], axis=1)     # [B, K]
    mask = jnp.broadcast_to(executed[:, :, None], drawn.shape).astype(jnp.float32)
    tokens, actions = (None, drawn) if student.continuous else (drawn, None)
    rec = dict(hist=hist, tokens=tokens, actions=actions, behaviour_logp=blogp,
               teacher_logp=t_logp, teacher_mean=t_mean, mask=mask, step_mask=alive,
               reward=reward, done=ended, value=out.get("value"))
    carry = (nxt, push_history(hist, nxt.obs), alive * (1.0 - ended), success, finished,
             length, msums, level)
    return carry, rec

  init = (state, hist, jnp.ones((b,), jnp.float32), zeros, zeros, zeros, metric_sums, zeros)
  (state, _, _, success, finished, length, msums, _), rec = jax.lax.scan(
      body, init, jnp.arange(num_steps))
  return Rollout(batch=Batch(success=success, **rec), finished=finished, length=length,
                 task_id=state.info["task_id"], env_metrics=msums)


def episode_metrics(r: Rollout, prefix: str = "rollout/") -> dict[str, jax.Array]:
  """Scalars: success rate of completed episodes, mean length, env counters."""
  n_done = jnp.maximum(r.finished.sum(), 1.0)
  m = {
      "success": jnp.sum(r.success) / n_done,
      "success_all": jnp.mean(r.success),
      "return": jnp.mean(jnp.sum(r.batch.reward, 0)),
      "finished": jnp.mean(r.finished),
      "episode_length": jnp.sum(r.length * r.finished) / n_done,
      "control_steps": jnp.sum(r.length),
  }
  for n, v in r.env_metrics.items():
    m[n] = jnp.sum(v) if n.startswith("nonfinite") else jnp.sum(v) / jnp.maximum(r.length.sum(), 1.0)
  return {prefix + k: v for k, v in m.items()}
