"""Measure the scripted experts: success from evaluation initial states, optionally after random
actions, optionally with Gaussian noise added to every executed arm action.

Used by the tests (a few states per task) and benchmarks/experts.py (all 50, the
random-prefix robustness figure, and the per-step noise figure: how far a policy's action errors
may go before the expert's own strategy fails, which bounds what imitating it can reach).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


ARM = np.array([1.0] * 6 + [0.0], np.float32)  # noise on the 6 arm dims, never the gripper


class ExpertRunner:
  """The jitted (reset, advance) programs of one suite's expert, for any batch size (jax.jit
  keeps one program per shape): pass one to several ``expert_success`` calls to compile once.

  advance runs ``chunk`` control steps from step t. Each world draws its random prefix and
  noise from its own key folded with the step, so a world's draws do not depend on which
  other worlds share its batch (the loop below drops finished worlds).
  """

  def __init__(self, env, chunk: int = 20, compiler_options: dict | None = None):
    self.env, self.chunk = env, int(chunk)
    self.reset, self.advance = _programs(env, self.chunk, compiler_options)


def _programs(env, chunk: int, compiler_options: dict | None):
  jit = functools.partial(jax.jit, compiler_options=compiler_options or None)

  @jit
  def reset(task_ids, indices):
    return jax.vmap(env.reset_eval)(task_ids, indices)

  @jit
  def advance(s, succ, t0, n_random, keys, noise):
    def body(carry, t):
      s, succ = carry
      k = jax.vmap(lambda kw: jax.random.split(jax.random.fold_in(kw, t)))(keys)
      rand = jax.vmap(lambda kk: jax.random.uniform(kk, (env.action_size,), minval=-1,
                                                    maxval=1))(k[:, 0])
      eps = jax.vmap(lambda kk: jax.random.normal(kk, (env.action_size,)))(k[:, 1])
      expert = jax.vmap(env.expert_action)(s)
      expert = jnp.clip(expert + noise[:, None] * ARM * eps, -1.0, 1.0)
      a = jnp.where((t < n_random)[:, None], rand, expert)
      s = jax.vmap(env.step)(s, a)
      # the expert gets a whole episode's worth of steps after the random prefix
      live = t < n_random + env.max_episode_steps
      return (s, jnp.maximum(succ, s.info["success"] * live)), None

    (s, succ), _ = jax.lax.scan(body, (s, succ), t0 + jnp.arange(chunk))
    return s, succ

  return reset, advance


def _buckets(batch: int, smallest: int = 16) -> list[int]:
  """Batch sizes the loop may shrink to as worlds finish: batch, batch // 4, ... >= smallest
  (each one more compile; a step's CPU cost grows about linearly with the batch)."""
  sizes = [batch]
  while sizes[-1] // 4 >= smallest:
    sizes.append(sizes[-1] // 4)
  return sizes


def task_state_grid(num_tasks: int, states: int) -> tuple[np.ndarray, np.ndarray]:
  """(task_ids, indices): every task with evaluation states 0..states-1, task-major, so a
  success vector reshapes to [num_tasks, states]."""
  return np.repeat(np.arange(num_tasks), states), np.tile(np.arange(states), num_tasks)


def expert_success(env, task_ids, indices, random_steps=None, seed: int = 0,
                   max_random: int = 60, action_noise: float = 0.0,
                   compiler_options: dict | None = None, chunk: int = 20,
                   shrink: bool = True, runner: ExpertRunner | None = None) -> np.ndarray:
  """Success [B] of the expert from ``reset_eval(task_ids, indices)``.

  random_steps: int [B] uniform random actions taken first (each <= max_random); the expert
  then has max_episode_steps control steps to succeed.
  action_noise: std of Gaussian noise added to the expert's 6 arm dims at every step (in the
  [-1, 1] action units; the sum is clipped to [-1, 1]), one for all worlds or one per world
  [B]; 0 = the clean expert.
  compiler_options: XLA options for this compile (e.g. {"xla_backend_optimization_level": 3}
  where XLA_FLAGS lower it for everything else, as the tests do).
  chunk: control steps per compiled call. Between calls, the loop stops once every world has
  succeeded or run out of steps, and (shrink) gathers the worlds still running into a smaller
  batch (sizes from _buckets: one compile each). Neither changes a world's actions or draws.
  runner: the compiled programs of an earlier call on this env (then chunk and
  compiler_options are the runner's).
  """
  noise = np.broadcast_to(np.asarray(action_noise, np.float32), np.shape(task_ids))
  if not np.all(np.isfinite(noise) & (noise >= 0)):
    raise ValueError(f"action_noise must be finite stds >= 0, got {action_noise}")
  task_ids = jnp.asarray(task_ids, jnp.int32)
  n = (np.zeros(task_ids.shape, np.int32) if random_steps is None
       else np.asarray(random_steps, np.int32))
  if int(np.max(n, initial=0)) > max_random:
    raise ValueError(f"random_steps up to {max_random}, got {int(np.max(n))}")
  b = int(task_ids.shape[0])
  runner = runner or ExpertRunner(env, chunk, compiler_options)
  if runner.env is not env:
    raise ValueError("runner was made for another env")
  reset, advance, chunk = runner.reset, runner.advance, runner.chunk
  s = reset(task_ids, jnp.asarray(indices, jnp.int32))
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(jnp.arange(b))
  succ = np.zeros(b, np.float32)
  steps = env.max_episode_steps + (max_random if random_steps is not None else 0)
  # rows of the running batch: which world each is (-1: padding, a copy of a live world)
  live_ids = np.arange(b)
  state, s_succ = s, jnp.zeros(b)
  rows_n, rows_noise, rows_keys = jnp.asarray(n), jnp.asarray(noise), keys
  buckets = _buckets(b) if shrink else [b]
  for t0 in range(0, steps, chunk):
    state, s_succ = advance(state, s_succ, jnp.int32(t0), rows_n, rows_keys, rows_noise)
    got = np.asarray(s_succ)
    real = live_ids >= 0
    succ[live_ids[real]] = np.maximum(succ[live_ids[real]], got[real])
    t_end = t0 + chunk
    running = real & (got < 1) & (t_end < n[np.maximum(live_ids, 0)] + env.max_episode_steps)
    if not running.any():
      break
    size = min(x for x in buckets if x >= running.sum())
    if size < len(live_ids):  # drop finished worlds: gather the running rows, pad by repeating
      rows = np.flatnonzero(running)
      rows = np.concatenate([rows, np.full(size - len(rows), rows[0])])
      live_ids = np.where(np.arange(size) < running.sum(), live_ids[rows], -1)
      take = jnp.asarray(rows)
      state, s_succ = jax.tree.map(lambda x: x[take], (state, s_succ))
      rows_n, rows_noise, rows_keys = rows_n[take], rows_noise[take], rows_keys[take]
  return succ
