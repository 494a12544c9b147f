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
from typing import Any, Callable

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
  hist: History               # observation history, fields [T, B, ...] (images [T, B, H_T, H, W, 3])
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


def world_axis(x) -> int | None:
  """A :class:`Batch` field's world axis: 1 for [T, B, ...], 0 for [B], None for a scalar."""
  return None if x.ndim == 0 else 1 if x.ndim > 1 else 0


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


@struct.dataclass
class Episodes:
  """What :func:`run_episodes` returns: T actor steps of B worlds."""
  hist: History          # what the actor saw at each step, fields [T, B, ...]
  record: Any            # the actor's record of each step, [T, B, ...]
  executed: jax.Array    # [T, B, K] 1 for control steps that ran (a receding horizon's
                         # unrun tail counts while the world was alive)
  step_mask: jax.Array   # [T, B] 1 for steps taken while the episode ran
  reward: jax.Array      # [T, B] success (1 at the step it happens) + dense shaping
  done: jax.Array        # [T, B] 1 at the step the episode ended
  success: jax.Array     # [B]
  finished: jax.Array    # [B]
  length: jax.Array      # [B] control steps executed
  alive: jax.Array       # [B] still running after the last step
  state: Any             # the batched env state after the last step
  env_metrics: dict      # per-world sums of the suite's metrics over executed control steps


def run_episodes(env, actor: Callable, state, key: jax.Array, num_steps: int, *, chunk: int,
                 history: int = 1, execute: int | None = None, alive=None, carry=None,
                 dense_coef: float = 0.0) -> Episodes:
  """The one episode runner: ``num_steps`` actor steps of ``chunk`` control steps each.

  actor(carry, hist, env_state, key, t) -> (carry, env_actions [B, chunk, A], record): a
  student, a teacher, the scripted expert or a mixture; it sees the observation history
  and (privileged actors only) the env state; ``record`` is whatever it wants kept per step.
  The first ``execute`` actions of each chunk run open-loop (images rendered once, after
  them). alive [B]: worlds whose episode is running (default all); a world whose episode
  ends stops counting (its later steps are masked) and its success and length are kept.
  dense_coef: weight of the suite's dense shaping in ``reward``, as a potential difference
  (the mean of ``dense_reward`` over the chunk's steps minus the previous chunk's), so it
  rewards progress and sums to a bounded amount whatever the episode's length.
  """
  execute = check_execute(execute, chunk)
  hist = init_history(state.obs, history)
  b = state.done.shape[0]
  zeros = jnp.zeros((b,), jnp.float32)
  alive = jnp.ones((b,), jnp.float32) if alive is None else jnp.asarray(alive, jnp.float32)
  metric_sums = {n: zeros for n in state.metrics}
  has_dense = dense_coef and "dense_reward" in state.metrics

  def body(c, t):
    state, hist, alive, success, finished, length, msums, level, act_c = c
    act_c, actions, record = actor(act_c, hist, state, jax.random.fold_in(key, t), t)
    nxt, executed = env.step_chunk(state, actions[:, :execute])
    executed = executed * alive[:, None]                       # [B, execute]
    ended = alive * (nxt.done > 0)
    won = ended * nxt.info["success"]
    reward = won
    if has_dense:
      now = nxt.metrics["dense_reward"] / jnp.maximum(executed.sum(-1), 1.0)
      reward = reward + alive * dense_coef * (now - level)
      level = jnp.where(alive > 0, now, level)
    length = length + executed.sum(-1)
    msums = {n: msums[n] + alive * nxt.metrics[n] for n in msums}
    if execute < chunk:   # the tail that never ran counts while the world was alive
      tail = jnp.broadcast_to(executed[:, -1:], (b, chunk - execute))
      executed = jnp.concatenate([executed, tail], axis=1)     # [B, K]
    out = dict(hist=hist, record=record, executed=executed, step_mask=alive, reward=reward,
               done=ended)
    c = (nxt, push_history(hist, nxt.obs), alive * (1.0 - ended), jnp.maximum(success, won),
         jnp.maximum(finished, ended), length, msums, level, act_c)
    return c, out

  init = (state, hist, alive, zeros, zeros, zeros, metric_sums, zeros, carry)
  (state, _, alive, success, finished, length, msums, _, _), out = jax.lax.scan(
      body, init, jnp.arange(num_steps))
  return Episodes(success=success, finished=finished, length=length, alive=alive, state=state,
                  env_metrics=msums, **out)


def rollout(env, student: Policy, params, state, key: jax.Array, num_steps: int, *,
            temperature: float = 1.0, teacher=None, teacher_params=None,
            teacher_temperature: float = 1.0, history: int | None = None,
            execute: int | None = None, dense_coef: float = 0.0,
            teacher_logp: bool = True, teacher_mean: bool = False) -> Rollout:
  """Episodes of the student from the batched ``state``, scored by the teacher.

  env: a batched suite with ``step_chunk`` (envs.core.BatchEnv, no auto-reset:
    an iteration is a batch of episodes). temperature 0 decodes greedily.
  execute: how many of the chunk's K actions run before the policy is queried
    again (receding horizon; default all K). Tokens of the actions not run stay
    in the loss mask while the world is alive: they are still the student's
    samples on its own state, scored by the teacher on the same observation.
  dense_coef: see :func:`run_episodes`.
  teacher_logp / teacher_mean: what of the teacher to record, its log-probs over bins (the
    distillation objectives) and its expected action (RPD); each costs work at every step.
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

  def act(carry, hist, state, key, t):
    del t
    out = student.outputs(params, hist)
    drawn, blogp = student.sample(out, key, temperature)
    rec = dict(drawn=drawn, behaviour_logp=blogp, value=out.get("value"), teacher_logp=None,
               teacher_mean=None)
    if teacher is not None and (teacher_logp or teacher_mean):
      t_logits = jax.lax.stop_gradient(teacher.logits(teacher_params, state, hist))
      if teacher_logp:
        rec["teacher_logp"] = jax.nn.log_softmax(t_logits / teacher_temperature, -1)
      if teacher_mean:
        rec["teacher_mean"] = expected_action(t_logits)
    return carry, student.actions(drawn), rec

  ep = run_episodes(env, act, state, key, num_steps, chunk=k, history=history, execute=execute,
                    dense_coef=dense_coef)
  rec = dict(ep.record)
  drawn = rec.pop("drawn")
  mask = jnp.broadcast_to(ep.executed[..., None], drawn.shape).astype(jnp.float32)
  tokens, actions = (None, drawn) if student.continuous else (drawn, None)
  batch = Batch(hist=ep.hist, tokens=tokens, actions=actions, mask=mask,
                step_mask=ep.step_mask, reward=ep.reward, done=ep.done, success=ep.success,
                **rec)
  return Rollout(batch=batch, finished=ep.finished, length=ep.length,
                 task_id=ep.state.info["task_id"], env_metrics=ep.env_metrics)


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
