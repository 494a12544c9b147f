"""The compiled programs of demonstration collection (:mod:`opd_jax.collect`): blocks of
expert or policy/expert control steps over a batch of worlds, run by the shared episode
runner, with the suite's batched reset and refill kept in one :class:`Collector`."""
from __future__ import annotations

import json
from typing import Any

import envs  # sets the XLA flag MJX needs on CPU before JAX starts  # noqa: F401  isort: skip
import jax
import jax.numpy as jnp

from opd_jax.rollout import run_episodes

COLLECT_TAG = 0x636F6C6C  # folded into the seed: collection keys never equal eval keys


def collection_key(seed: int, task: int, attempt: int) -> jax.Array:
  """Key of the ``attempt``-th training initial state of ``task``."""
  k = jax.random.fold_in(jax.random.PRNGKey(seed), COLLECT_TAG)
  return jax.random.fold_in(jax.random.fold_in(k, task), attempt)


def _record(ep, valid) -> dict:
  """The per-control-step record of a block of the episode runner (chunk 1): the
  observation each action was chosen in, the expert's clean action, reward, done, valid."""
  rec = {c: v[:, :, -1] for c, v in ep.hist.images.items()}      # [S, B, H, W, 3]
  rec.update(proprio=ep.hist.proprio[:, :, -1], action=ep.record["action"], reward=ep.reward,
             done=ep.done, valid=valid)
  return rec


def make_block(env, block: int, action_noise: float):
  """``run(state, alive, key) -> (state, alive, record)``: ``block`` expert steps of a batch.

  record: obs (cameras [S, B, H, W, 3], proprio [S, B, 8]), actions [S, B, 7], reward
  [S, B], done [S, B], valid [S, B] (1 for steps taken while the episode was running).
  """
  noise_mask = jnp.asarray([1.0] * 6 + [0.0], jnp.float32)
  benv = envs.core.BatchEnv(env)

  def expert(carry, hist, s, key, t):
    del hist, t
    a = jax.vmap(env.expert_action)(s)
    run = a
    if action_noise > 0:
      run = jnp.clip(a + action_noise * noise_mask * jax.random.normal(key, a.shape), -1.0, 1.0)
    return carry, run[:, None], dict(action=a)

  def run(state, alive, key):
    ep = run_episodes(benv, expert, state, key, block, chunk=1, alive=alive)
    return ep.state, ep.alive > 0, _record(ep, ep.step_mask > 0)

  return jax.jit(run, donate_argnums=(0,))


class Collector:
  """A suite with its compiled collection programs (batched reset, refill, expert and
  policy blocks), reused by every ``collect(..., collector=c)`` on that suite: a DAgger
  loop or a test compiles each program once. The policy's parameters and beta are
  arguments, so a retrained checkpoint of the same architecture reuses its block."""

  def __init__(self, suite: str, env_kwargs: dict):
    self.key = (suite, json.dumps(env_kwargs, sort_keys=True))
    self.env, self.reset, self.refill = _suite_fns(self.key)
    self.blocks: dict[tuple, Any] = {}   # by what each block closes over

  def block(self, key: tuple, build):
    if key not in self.blocks:
      self.blocks[key] = build()
    return self.blocks[key]


def _placed(args):
  """``args`` committed to one device. A jitted function compiles once per placement of its
  arguments: the checkpoint's parameters come committed, fresh arrays not, and the mix that
  changed from one block call to the next compiled the policy block three times (~35 s each)."""
  return jax.device_put(args, jax.local_devices()[0])


def _suite_fns(env_key: tuple):
  """(env, jitted batched reset, jitted refill) of ``env_key = (suite, env_kwargs JSON)``."""
  env = envs.make(env_key[0], render=True, **json.loads(env_key[1]))

  def refill(state, keys, task_ids, fresh_mask):
    fresh = jax.vmap(env.reset)(keys, task_ids)
    return jax.tree.map(lambda n, o: jnp.where(
        fresh_mask.reshape(fresh_mask.shape + (1,) * (o.ndim - 1)), n, o), fresh, state)

  return env, jax.jit(jax.vmap(env.reset)), jax.jit(refill, donate_argnums=(0,))


def make_policy_block(env, policy, temperature: float):
  """``run(state, alive, key, handover, beta, params) -> (state, alive, record)``: one chunk of
  K steps (``beta`` and the policy's ``params`` are arguments: one compile serves every mix).

  The policy decodes a chunk from the batch's current observations (history 1).
  handover int32 [B]: for a world with handover >= 0 the expert acts (and the step is
  recorded) from episode step ``handover`` on, the policy before it; for handover < 0
  the world runs the policy's chunk, or with probability ``beta`` the expert's, and
  every step is recorded. Recorded actions are the expert's at the visited states.
  Same record as make_block.
  """
  from opd_jax.policy import init_history  # pylint: disable=import-outside-toplevel
  benv = envs.core.BatchEnv(env)

  def mix(carry, hist, s, key, t):
    del hist, key
    chunk, use_expert, handover = carry
    a = jax.vmap(env.expert_action)(s)
    handed = s.info["step"] >= handover
    expert_acts = jnp.where(handover >= 0, handed, use_expert)
    run = jnp.where(expert_acts[:, None], a, chunk[:, t])
    return carry, run[:, None], dict(action=a, recorded=(handover < 0) | handed)

  def run(state, alive, key, handover, beta, params):
    k_tok, k_mix = jax.random.split(key)
    out = policy.outputs(params, init_history(state.obs, policy.cfg.history))
    chunk = policy.actions(policy.sample(out, k_tok, temperature)[0])      # [B, K, 7]
    use_expert = jax.random.uniform(k_mix, alive.shape) < beta
    ep = run_episodes(benv, mix, state, key, policy.cfg.chunk, chunk=1, alive=alive,
                      carry=(chunk, use_expert, handover))
    return ep.state, ep.alive > 0, _record(ep, (ep.step_mask > 0) & ep.record["recorded"])

  return jax.jit(run, donate_argnums=(0,))
