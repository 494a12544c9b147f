"""What every trainer builds from its config: the suite and the student.

SFT, OPD and the RL objectives share these, so they read ``config.env`` and
``config.student`` the same way and a checkpoint written by one loads in another.
"""
from __future__ import annotations

import dataclasses

import envs  # sets the XLA flag MJX needs on CPU before JAX starts  # noqa: F401  isort: skip
import numpy as np
from flax import nnx

from opd_jax import actions as act
from opd_jax import checkpoint, models
from opd_jax.policy import Policy, check_obs_matches


def make_env(config):
  """(the suite, the keyword arguments that made it plus its solver iterations)."""
  kw = dict(image_size=config.env.image_size, substeps=config.env.substeps,
            control=config.env.control)
  if config.env.max_episode_steps > 0:
    kw["max_episode_steps"] = config.env.max_episode_steps
  # the engine is not part of the recorded physics: "c" and "mjx" step the same model alike
  env = envs.make(config.env.suite, **kw, physics=config.env.get("physics", "mjx"))
  # recorded in checkpoints beside the arm law: the physics the policy was trained under
  kw["solver_iterations"] = int(env.mj_model.opt.iterations)
  return env, kw


def model_config_from(config, env) -> models.ModelConfig:
  """``config.student.model`` (-1 or () = from its size) for the suite's cameras and actions."""
  m = dict(config.student.model)
  m = {k: (None if v == -1 or v == () else v) for k, v in m.items()}
  return models.ModelConfig(**m, image_size=config.env.image_size, cameras=tuple(env.cameras),
                            proprio_dim=8, action_dim=env.action_size)


def identity_stats(dim: int) -> act.ActionStats:
  """The suites' actions already lie in [-1, 1]: normalisation is the identity
  (gripper, the last dim, left as is)."""
  mask = np.ones(dim, bool)
  mask[-1] = False
  return act.make_stats(-np.ones(dim), np.ones(dim), mask)


def with_value_head(graphdef, params, cfg: models.ModelConfig, seed: int):
  """A loaded policy given a freshly initialised value head (the rest of its parameters kept):
  how a value-based objective starts from an SFT checkpoint. Returns (graphdef, params, cfg)."""
  if cfg.value_head:
    return graphdef, params, cfg
  cfg = dataclasses.replace(cfg, value_head=True)
  graphdef, fresh = models.make_policy(cfg, seed=seed)
  merged = nnx.to_pure_dict(fresh)
  loaded = nnx.to_pure_dict(params)

  def copy(dst, src):
    for k, v in src.items():
      if isinstance(v, dict):
        copy(dst[k], v)
      else:
        dst[k] = v
  copy(merged, loaded)
  nnx.replace_by_pure_dict(fresh, merged)
  return graphdef, fresh, cfg


def make_student(config, env, *, value_head: bool = False, stats: act.ActionStats | None = None):
  """(Policy, params, where-from) from ``config.student.init`` or a fresh init of
  ``config.student.model``; ``value_head`` adds one (fresh) where the policy has none.
  ``stats``: a fresh student's action statistics (default the identity; a student of a
  checkpoint teacher takes the teacher's, so a token means the same action to both)."""
  if config.student.init:
    graphdef, params, cfg, stats, meta = checkpoint.load_policy(config.student.init)
    check_obs_matches(cfg, env, "student", meta)
    origin = config.student.init
    if value_head and not cfg.value_head:
      graphdef, params, cfg = with_value_head(graphdef, params, cfg, config.seed)
      origin += " + a fresh value head"
    return Policy.build(graphdef, cfg, stats, env.instructions), params, origin
  cfg = model_config_from(config, env)
  if value_head:
    cfg = dataclasses.replace(cfg, value_head=True)
  graphdef, params = models.make_policy(cfg, seed=config.seed)
  stats = identity_stats(env.action_size) if stats is None else stats
  return Policy.build(graphdef, cfg, stats, env.instructions), params, "init"


def checkpoint_stats(path: str) -> act.ActionStats:
  """The action statistics a checkpoint (or shipped policy) was trained with."""
  meta = checkpoint.read_meta(path)[0]
  return act.ActionStats.from_dict(meta["action_stats"])

