"""Teachers: one protocol, ``logits(params, env_state, hist) -> [B, K, D, V]``.

``env_state`` is the batched environment State (privileged information lives
in ``info``; only a scripted teacher reads it); ``hist`` is the observation
history the student also sees (see opd_jax.policy). Teachers are frozen:
their ``params`` never receive gradients.

- :class:`ScriptedTeacher` — the environments' privileged feedback expert,
  turned into a distribution over the student's bins: a discretised Gaussian
  (width ``sigma`` in normalised action units) around the expert's action at
  each chunk step, optionally mixed with a uniform ``floor``. With
  ``lookahead="simulate"`` the expert's K-step chunk is what the expert would
  do over the next K control steps, obtained by rolling
  it out on a copy of the physics (images are not rendered); with ``"hold"``
  its current action is repeated K times (cheaper, cruder). This is the
  embedded default: it needs nothing downloaded.
- :class:`CheckpointTeacher` — any policy checkpoint written by opd_jax (may
  be larger than the student).

:func:`make` validates that the teacher's action space (dims, bins, chunk,
action statistics) matches the student's before anything compiles.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from opd_jax import actions as act
from opd_jax import checkpoint
from opd_jax.policy import Policy, check_obs_matches


@dataclasses.dataclass(frozen=True, eq=False)
class ScriptedTeacher:
  env: Any                 # the unbatched suite (needs expert_action and step)
  stats: act.ActionStats
  chunk: int
  sigma: float = 0.05
  floor: float = 0.0       # mass spread uniformly over all bins (caps the cost of far-off bins)
  lookahead: str = "simulate"
  history: int = 1
  num_bins: int = act.NUM_BINS

  @property
  def params(self):
    """The Gaussian's width is the only 'parameter' (an array, so it can change
    without recompiling)."""
    return {"sigma": jnp.float32(self.sigma)}

  @property
  def action_dim(self) -> int:
    return self.env.action_size

  def expert_chunk(self, env_state) -> jax.Array:
    """float32 [B, K, D] expert actions for the next K control steps."""
    env = self.env

    def one(s):
      if self.lookahead == "hold":
        return jnp.repeat(env.expert_action(s)[None], self.chunk, axis=0)

      def body(s, _):
        a = env.expert_action(s)
        return env.step(s, a, render=False), a

      return jax.lax.scan(body, s, None, length=self.chunk)[1]

    return jax.vmap(one)(env_state)

  def logits(self, params, env_state, hist) -> jax.Array:
    del hist
    target = act.normalize(self.stats, self.expert_chunk(env_state))  # [B, K, D]
    centres = act.from_tokens(jnp.arange(self.num_bins))
    return self.with_floor(-0.5 * jnp.square((centres - target[..., None]) / params["sigma"]))

  def with_floor(self, logits: jax.Array) -> jax.Array:
    """log((1 - floor) * softmax(logits) + floor / V); the logits as they are when floor = 0.

    A student token far from the expert's action then costs at most log(V / floor) nats
    instead of (distance / sigma)^2 / 2."""
    if self.floor <= 0:
      return logits
    return jnp.logaddexp(jnp.log1p(-self.floor) + jax.nn.log_softmax(logits, -1),
                         jnp.log(self.floor / self.num_bins))


@dataclasses.dataclass(frozen=True, eq=False)
class CheckpointTeacher:
  policy: Policy
  params: Any
  path: str = ""

  @property
  def chunk(self) -> int:
    return self.policy.cfg.chunk

  @property
  def action_dim(self) -> int:
    return self.policy.cfg.action_dim

  @property
  def num_bins(self) -> int:
    return self.policy.cfg.num_bins

  @property
  def history(self) -> int:
    return self.policy.cfg.history

  @property
  def stats(self) -> act.ActionStats:
    return self.policy.stats

  def logits(self, params, env_state, hist) -> jax.Array:
    del env_state
    return self.policy.logits(params, hist)


def make(tcfg, env, student: Policy):
  """Builds the teacher named by ``config.teacher`` and checks it against the student."""
  if tcfg.kind == "scripted":
    if tcfg.sigma <= 0:
      raise ValueError(f"config.teacher.sigma must be > 0, got {tcfg.sigma}")
    floor = float(tcfg.get("floor", 0.0))
    if not 0.0 <= floor < 1.0:
      raise ValueError(f"config.teacher.floor must be in [0, 1), got {floor}")
    if tcfg.lookahead not in ("simulate", "hold"):
      raise ValueError(f"config.teacher.lookahead must be 'simulate' or 'hold', "
                       f"got {tcfg.lookahead!r}")
    if not hasattr(env, "expert_action"):
      raise ValueError(f"suite {getattr(env, 'name', env)} has no scripted expert; "
                       f"use config.teacher.kind='checkpoint'")
    teacher = ScriptedTeacher(env=env, stats=student.stats, chunk=student.cfg.chunk,
                              sigma=float(tcfg.sigma), floor=floor, lookahead=tcfg.lookahead)
  elif tcfg.kind == "checkpoint":
    if not tcfg.checkpoint:
      raise ValueError("config.teacher.kind='checkpoint' needs config.teacher.checkpoint=PATH")
    graphdef, params, cfg, stats, meta = checkpoint.load_policy(tcfg.checkpoint)
    check_obs_matches(cfg, env, "teacher", meta)
    teacher = CheckpointTeacher(Policy.build(graphdef, cfg, stats, env.instructions), params,
                                tcfg.checkpoint)
  else:
    raise ValueError(f"config.teacher.kind must be 'scripted' or 'checkpoint', got {tcfg.kind!r}")
  check_compatible(teacher, student)
  return teacher


def check_compatible(teacher, student: Policy) -> None:
  """Raises ValueError if the teacher's token space differs from the student's."""
  s = student.cfg
  problems = []
  if teacher.action_dim != s.action_dim:
    problems.append(f"action dims {teacher.action_dim} vs student {s.action_dim}")
  if teacher.num_bins != s.num_bins:
    problems.append(f"bins {teacher.num_bins} vs student {s.num_bins}")
  if teacher.chunk != s.chunk:
    problems.append(f"chunk {teacher.chunk} vs student {s.chunk}")
  ts, ss = teacher.stats, student.stats
  if not (np.allclose(ts.q01, ss.q01, atol=1e-5) and np.allclose(ts.q99, ss.q99, atol=1e-5)
          and np.array_equal(np.asarray(ts.mask), np.asarray(ss.mask))):
    problems.append("action statistics differ (the same token would mean different actions): "
                    f"teacher q01={np.round(ts.q01, 4).tolist()} q99={np.round(ts.q99, 4).tolist()}, "
                    f"student q01={np.round(ss.q01, 4).tolist()} q99={np.round(ss.q99, 4).tolist()}")
  if problems:
    raise ValueError("teacher does not match the student: " + "; ".join(problems))
