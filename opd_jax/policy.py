"""A policy bound to a suite: model + action statistics + the suite's instructions.

:class:`Policy` turns environment observations (with a history window) into
action-token logits and tokens into environment actions. It is a frozen
record of static things (graphdef, config, statistics, tokenised
instructions); parameters are passed explicitly so everything stays a pure
function under ``jax.jit``.

The observation history (:class:`History`) is what a policy sees: the last T frames of
the suite's cameras and proprioception, the padding of slots before the episode's start,
and the task.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from opd_jax import actions as act
from opd_jax import checkpoint, models


@struct.dataclass
class History:
  """Observation history of B worlds over a window of T steps (oldest first)."""
  images: dict           # camera -> uint8 [B, T, H, W, 3]
  proprio: jax.Array     # float32 [B, T, P]
  pad_mask: jax.Array    # bool [B, T]: False for slots before the episode's first frame
  task_id: jax.Array     # int32 [B]

  def window(self, t: int) -> "History":
    """The last ``t`` steps."""
    return History({c: v[:, -t:] for c, v in self.images.items()}, self.proprio[:, -t:],
                   self.pad_mask[:, -t:], self.task_id)


@dataclasses.dataclass(frozen=True, eq=False)
class Policy:
  graphdef: Any
  cfg: models.ModelConfig
  stats: act.ActionStats
  text_ids: np.ndarray    # int32 [num_tasks, L]
  text_mask: np.ndarray   # bool [num_tasks, L]

  @classmethod
  def build(cls, graphdef, cfg: models.ModelConfig, stats: act.ActionStats,
            instructions: Sequence[str]) -> "Policy":
    ids, mask = models.tokenize(list(instructions), cfg.text_len, cfg.vocab_size)
    return cls(graphdef, cfg, stats, ids, mask)

  def inputs(self, hist: History) -> dict:
    """The model's observation dict from a (possibly longer) history window."""
    h = hist.window(self.cfg.history)
    obs = {cam: h.images[cam] for cam in self.cfg.cameras}
    obs["proprio"] = h.proprio
    obs["timestep_pad_mask"] = h.pad_mask
    return obs

  def outputs(self, params, hist: History, deterministic: bool = True,
              dropout_key: jax.Array | None = None) -> dict:
    """The model's outputs (models.OctoPolicy.__call__): "logits" [B, K, D, V], "value"."""
    tid = hist.task_id
    return models.apply(self.graphdef, params, self.inputs(hist),
                        jnp.asarray(self.text_ids)[tid], jnp.asarray(self.text_mask)[tid],
                        deterministic=deterministic, dropout_key=dropout_key)

  def logits(self, params, hist: History) -> jax.Array:
    """[B, K, D, V] action-token logits."""
    return self.outputs(params, hist)["logits"]

  @property
  def continuous(self) -> bool:
    """A Gaussian policy (acts with normalised real actions, not tokens)."""
    return bool(self.cfg.gaussian_head)

  def sample(self, out: dict, key: jax.Array, temperature) -> tuple[jax.Array, jax.Array]:
    """What the policy draws from its outputs, and its log-prob per action dim [B, K, D].

    Token policy: int32 tokens [B, K, D] from softmax(logits / temperature). Gaussian
    policy: normalised actions [B, K, D] from N(mean, (std x temperature)^2), unclipped
    (``actions`` clips them). Temperature 0 takes the mode."""
    if self.continuous:
      std = jnp.exp(out["log_std"]) * temperature
      u = out["mean"] + std * jax.random.normal(key, out["mean"].shape)
      return u, gaussian_log_prob(u, out["mean"], out["log_std"], temperature)
    tokens = models.sample_tokens(out["logits"], key, temperature)
    return tokens, models.token_log_probs(out["logits"], tokens, jnp.maximum(temperature, 1e-6))

  def actions(self, drawn: jax.Array) -> jax.Array:
    """What ``sample`` drew [B, K, D] -> float32 [B, K, D] environment actions."""
    if self.continuous:
      return act.unnormalize(self.stats, jnp.clip(drawn, -1.0, 1.0))
    return act.decode(self.stats, drawn)


def gaussian_log_prob(x, mean, log_std, temperature=1.0) -> jax.Array:
  """log N(x; mean, (exp(log_std) x temperature)^2) per dim (temperature 0 treated as 1e-6)."""
  log_t = jnp.log(jnp.maximum(jnp.asarray(temperature, jnp.float32), 1e-6))
  z = (x - mean) / jnp.exp(log_std + log_t)
  return -0.5 * jnp.square(z) - log_std - log_t - 0.5 * jnp.log(2 * jnp.pi)


def check_obs_matches(cfg: models.ModelConfig, env, who: str, meta: dict | None = None) -> None:
  """A model must see the suite's cameras at the suite's resolution; with its checkpoint's
  ``meta``, it must also act under the physics it was trained under, the arm law (``control``)
  and the solver iterations: the same action moves the hand differently under the servo and
  the computed-torque laws, and an unconverged solver moves objects differently."""
  size = getattr(env, "image_size", None)
  if size is not None and size != cfg.image_size:
    raise ValueError(f"{who} model expects {cfg.image_size}x{cfg.image_size} images but the suite "
                     f"renders {size}x{size}: set config.env.image_size={cfg.image_size} or "
                     f"use a {who} trained at {size}")
  cams = set(getattr(env, "cameras", cfg.cameras))
  if not set(cfg.cameras) <= cams:
    raise ValueError(f"{who} model uses cameras {cfg.cameras}; the suite has {sorted(cams)}")
  if cfg.action_dim != env.action_size:
    raise ValueError(f"{who} model has action_dim={cfg.action_dim}; the suite's actions have "
                     f"{env.action_size} dims")
  law = getattr(env, "control", None)
  if meta is not None and law is not None:
    saved = checkpoint.trained_env_kwargs(meta)["control"]
    if saved != law:
      raise ValueError(f"{who} checkpoint was trained with control={saved!r} but the suite runs "
                       f"control={law!r}: set config.env.control={saved!r}, or use a checkpoint "
                       f"trained under {law!r}")
  model = getattr(env, "mj_model", None)
  if meta is not None and model is not None:
    saved = checkpoint.trained_env_kwargs(meta)["solver_iterations"]
    now = int(model.opt.iterations)
    if saved != now:
      raise ValueError(f"{who} checkpoint was trained under {saved} solver iterations but the "
                       f"suite's physics runs {now}: retrain it under the current physics "
                       f"(scripts/make_checkpoints.sh); opd_jax.evaluate still evaluates it under "
                       f"its own")


def init_history(obs: dict, length: int) -> History:
  """History window of ``length`` from the first observation of an episode (the suite's
  observation dict): the frame repeated, earlier slots marked as padding."""
  rep = lambda v: jnp.repeat(v[:, None], length, axis=1)  # noqa: E731
  b = obs["task_id"].shape[0]
  images = {k: rep(v) for k, v in obs.items() if k not in ("task_id", "proprio")}
  pad = jnp.broadcast_to(jnp.arange(length) == length - 1, (b, length))
  return History(images, rep(obs["proprio"]), pad, obs["task_id"])


def push_history(hist: History, obs: dict) -> History:
  """Appends the observation ``obs`` (shifting the oldest frame out)."""
  push = lambda v, new: jnp.concatenate([v[:, 1:], new[:, None].astype(v.dtype)], axis=1)  # noqa: E731
  return History({k: push(v, obs[k]) for k, v in hist.images.items()},
                 push(hist.proprio, obs["proprio"]),
                 push(hist.pad_mask, jnp.ones_like(hist.pad_mask[:, 0])), obs["task_id"])
