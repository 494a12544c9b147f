"""Environment state, wrappers and the registry.

The shape follows MuJoCo Playground: an environment has pure, *unbatched*
``reset(key) -> State`` and ``step(state, action) -> State``; wrappers add the
batch axis (:class:`BatchEnv`) and automatic resets (:class:`AutoReset`).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
from flax import struct
from mujoco import mjx


@struct.dataclass
class State:
  """One world (or a batch of worlds, with a leading [B] axis on every leaf).

  data: MJX physics state.
  obs: dict of observations (``agentview`` / ``wrist`` uint8 [H, W, 3],
    ``proprio`` float32 [P], ``task_id`` int32 []).
  reward: float32 [] sparse success reward of the last step.
  done: float32 [] 1.0 when the episode ended at this step (success, time
    limit or a physics blow-up).
  metrics: dict of float32 [] per-step scalars (dense reward, counters).
  info: dict of privileged / bookkeeping arrays (task id, step count, object
    poses, contacts, success, the rng of the world).
  """
  data: mjx.Data
  obs: dict[str, jax.Array]
  reward: jax.Array
  done: jax.Array
  metrics: dict[str, jax.Array]
  info: dict[str, Any]


class Env(Protocol):
  """What a suite provides. Shapes are for one world."""
  num_tasks: int
  max_episode_steps: int
  action_size: int
  instructions: tuple[str, ...]

  def reset(self, key: jax.Array, task_id: jax.Array | None = None) -> State: ...

  def step(self, state: State, action: jax.Array) -> State: ...


class BatchEnv:
  """Adds a leading batch axis: ``reset(keys [B, 2])``, ``step(state, actions [B, A])``."""

  def __init__(self, env: Env):
    self.env = env
    self._reset = jax.vmap(env.reset)
    self._step = jax.vmap(env.step)

  def __getattr__(self, name):
    return getattr(self.env, name)

  def reset(self, keys: jax.Array, task_ids: jax.Array | None = None) -> State:
    if task_ids is None:
      return jax.vmap(lambda k: self.env.reset(k))(keys)
    return self._reset(keys, task_ids)

  def step(self, state: State, actions: jax.Array) -> State:
    return self._step(state, actions)

  def step_chunk(self, state: State, actions: jax.Array) -> tuple[State, jax.Array]:
    """``actions [B, K, A]`` open-loop; returns the state and ``executed [B, K]``."""
    return jax.vmap(self.env.step_chunk)(state, actions)


class AutoReset:
  """Batched auto-reset: worlds whose episode ended start a fresh episode.

  The reset is computed only when at least one world is done (a ``lax.cond``
  on the whole batch), so stepping without terminations pays nothing for it.
  The returned state keeps ``done`` / ``reward`` / ``info['success']`` of the
  finished episode for the step that ended it, while ``data`` and ``obs``
  already belong to the new episode (as in MuJoCo Playground). Each world
  draws its new initial state from its own rng in ``info['rng']``.
  """

  def __init__(self, env: BatchEnv):
    self.env = env

  def __getattr__(self, name):
    return getattr(self.env, name)

  def reset(self, keys: jax.Array, task_ids: jax.Array | None = None) -> State:
    return self.env.reset(keys, task_ids)

  def step(self, state: State, actions: jax.Array) -> State:
    nxt = self.env.step(state, actions)

    def do_reset(nxt: State) -> State:
      keys = jax.vmap(lambda k: jax.random.split(k)[0])(nxt.info["rng"])
      fresh = self.env.reset(keys)
      done = nxt.done > 0

      def pick(new, old):
        mask = done.reshape(done.shape + (1,) * (old.ndim - 1))
        return jnp.where(mask, new, old)

      data = jax.tree.map(pick, fresh.data, nxt.data)
      obs = jax.tree.map(pick, fresh.obs, nxt.obs)
      keep = ("success",)
      info = {k: (v if k in keep else jax.tree.map(pick, fresh.info[k], v))
              for k, v in nxt.info.items()}
      return nxt.replace(data=data, obs=obs, info=info)

    return jax.lax.cond(jnp.any(nxt.done > 0), do_reset, lambda s: s, nxt)


_REGISTRY: dict[str, Callable[..., Env]] = {}


def register(name: str, factory: Callable[..., Env]) -> None:
  """Registers ``factory(**overrides) -> Env`` under ``name``."""
  _REGISTRY[name] = factory


def registered() -> tuple[str, ...]:
  _load_suites()
  return tuple(sorted(_REGISTRY))


def make(name: str, **overrides) -> Env:
  """Builds a registered suite, e.g. ``make("libero_spatial", image_size=64)``."""
  _load_suites()
  if name not in _REGISTRY:
    raise ValueError(f"unknown environment {name!r}; registered: {sorted(_REGISTRY)}")
  return _REGISTRY[name](**overrides)


def _load_suites() -> None:
  # Suites register themselves on import; import lazily to keep `import envs` light.
  import envs.libero  # noqa: F401  pylint: disable=import-outside-toplevel
