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


@functools.lru_cache(maxsize=None)
def _runner(env, max_random: int, compiler_options: tuple = ()):
  @functools.partial(jax.jit, compiler_options=dict(compiler_options) or None)
  def run(task_ids, indices, n_random, key, noise):
    s = jax.vmap(env.reset_eval)(task_ids, indices)

    def body(carry, t):
      s, succ, key = carry
      key, sub, k_noise = jax.random.split(key, 3)
      shape = (task_ids.shape[0], env.action_size)
      rand = jax.random.uniform(sub, shape, minval=-1, maxval=1)
      expert = jax.vmap(env.expert_action)(s)
      expert = jnp.clip(expert + noise[:, None] * ARM * jax.random.normal(k_noise, shape),
                        -1.0, 1.0)
      a = jnp.where((t < n_random)[:, None], rand, expert)
      s = jax.vmap(env.step)(s, a)
      # the expert gets a whole episode's worth of steps after the random prefix
      live = t < n_random + env.max_episode_steps
      return (s, jnp.maximum(succ, s.info["success"] * live), key), None

    steps = env.max_episode_steps + max_random
    (_, succ, _), _ = jax.lax.scan(body, (s, jnp.zeros(task_ids.shape), key), jnp.arange(steps))
    return succ

  return run


def task_state_grid(num_tasks: int, states: int) -> tuple[np.ndarray, np.ndarray]:
  """(task_ids, indices): every task with evaluation states 0..states-1, task-major, so a
  success vector reshapes to [num_tasks, states]."""
  return np.repeat(np.arange(num_tasks), states), np.tile(np.arange(states), num_tasks)


def expert_success(env, task_ids, indices, random_steps=None, seed: int = 0,
                   max_random: int = 60, action_noise: float = 0.0,
                   compiler_options: dict | None = None) -> np.ndarray:
  """Success [B] of the expert from ``reset_eval(task_ids, indices)``.

  random_steps: int [B] uniform random actions taken first (each <= max_random); the expert
  then has max_episode_steps control steps to succeed.
  action_noise: std of Gaussian noise added to the expert's 6 arm dims at every step (in the
  [-1, 1] action units; the sum is clipped to [-1, 1]), one for all worlds or one per world
  [B]; 0 = the clean expert.
  compiler_options: XLA options for this compile (e.g. {"xla_backend_optimization_level": 3}
  where XLA_FLAGS lower it for everything else, as the tests do).
  """
  noise = np.broadcast_to(np.asarray(action_noise, np.float32), np.shape(task_ids))
  if not np.all(np.isfinite(noise) & (noise >= 0)):
    raise ValueError(f"action_noise must be finite stds >= 0, got {action_noise}")
  task_ids = jnp.asarray(task_ids, jnp.int32)
  n = (jnp.zeros(task_ids.shape, jnp.int32) if random_steps is None
       else jnp.asarray(random_steps, jnp.int32))
  if int(jnp.max(n, initial=0)) > max_random:
    raise ValueError(f"random_steps up to {max_random}, got {int(jnp.max(n))}")
  run = _runner(env, max_random if random_steps is not None else 0,
                tuple(sorted((compiler_options or {}).items())))
  return np.asarray(run(task_ids, jnp.asarray(indices, jnp.int32), n, jax.random.PRNGKey(seed),
                        jnp.asarray(noise)))
