"""A policy bound to a suite: model + action statistics + the suite's instructions.

:class:`Policy` turns environment observations (with a history window) into
action-token logits and tokens into environment actions. It is a frozen
record of static things (graphdef, config, statistics, tokenised
instructions); parameters are passed explicitly so everything stays a pure
function under ``jax.jit``.

Observation history (``hist``), shapes for a batch of B worlds and window T:
``{camera: uint8 [B, T, H, W, 3], "proprio": [B, T, P],
"timestep_pad_mask": bool [B, T], "task_id": int32 [B]}``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import actions as act
from opd_jax import checkpoint, models


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

  def inputs(self, hist: dict) -> dict:
    """The model's observation dict from a (possibly longer) history window."""
    t = self.cfg.history
    obs = {cam: hist[cam][:, -t:] for cam in self.cfg.cameras}
    obs["proprio"] = hist["proprio"][:, -t:]
    obs["timestep_pad_mask"] = hist["timestep_pad_mask"][:, -t:]
    return obs

  def outputs(self, params, hist: dict, deterministic: bool = True) -> dict:
    tid = hist["task_id"]
    return models.apply(self.graphdef, params, self.inputs(hist),
                        jnp.asarray(self.text_ids)[tid], jnp.asarray(self.text_mask)[tid],
                        deterministic=deterministic)

  def logits(self, params, hist: dict) -> jax.Array:
    """[B, K, D, V] action-token logits."""
    return self.outputs(params, hist)["logits"]

  def actions(self, tokens: jax.Array) -> jax.Array:
    """int [B, K, D] tokens -> float32 [B, K, D] environment actions."""
    return act.decode(self.stats, tokens)


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


def init_history(obs: dict, length: int) -> dict:
  """History window of ``length`` from the first observation of an episode:
  the frame repeated, earlier slots marked as padding."""
  hist = {k: jnp.repeat(v[:, None], length, axis=1) for k, v in obs.items() if k != "task_id"}
  b = obs["task_id"].shape[0]
  hist["timestep_pad_mask"] = jnp.broadcast_to(jnp.arange(length) == length - 1, (b, length))
  hist["task_id"] = obs["task_id"]
  return hist


def push_history(hist: dict, obs: dict) -> dict:
  """Appends ``obs`` (shifting the oldest frame out)."""
  new = {k: jnp.concatenate([v[:, 1:], obs[k][:, None].astype(v.dtype)], axis=1)
         for k, v in hist.items() if k not in ("task_id", "timestep_pad_mask")}
  pad = hist["timestep_pad_mask"]
  new["timestep_pad_mask"] = jnp.concatenate([pad[:, 1:], jnp.ones_like(pad[:, :1])], axis=1)
  new["task_id"] = obs["task_id"]
  return new