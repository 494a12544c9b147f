"""The trainer's objectives by config name: distillation (distill.py) and RL (rl.py).

Every objective is a pure ``fn(out, batch, **hparams) -> (loss, metrics)``; :func:`get`
binds the hyper-parameters it takes. :class:`Objective` says what else it needs, so the
trainer builds only that (a teacher, a value head) and refuses a config that lacks it
before anything compiles.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable

from opd_jax.objectives.common import Metrics, Outputs, gather, masked_mean, token_metrics
from opd_jax.objectives.distill import forward_kl, hard_ce, reverse_kl, reverse_kl_exact
from opd_jax.objectives.rl import (action_log_probs, clipped_policy_loss, cosine_weight, gae, group_advantages,
                                   grpo, normalize, ppo, refill_plan, reverse_kl_grpo, rpd,
                                   teacher_mse)


@dataclasses.dataclass(frozen=True)
class Objective:
  fn: Callable
  needs_teacher: bool
  needs_value: bool = False
  advantage: str = ""        # "" | "group" (GRPO, needs rollout.group >= 2) | "gae"
  teacher_mean: bool = False  # reads the teacher's expected action (RPD), not its log-probs
  continuous_ok: bool = False  # works for a Gaussian student (no tokens needed)
  # valid on states an older student visited (DAgger-style replay): reads the teacher's whole
  # distribution, not the tokens the student drew
  off_policy_ok: bool = False


OBJECTIVES: dict[str, Objective] = {
    "reverse_kl": Objective(reverse_kl, needs_teacher=True),
    "reverse_kl_exact": Objective(reverse_kl_exact, needs_teacher=True, off_policy_ok=True),
    "forward_kl": Objective(forward_kl, needs_teacher=True, off_policy_ok=True),
    "hard_ce": Objective(hard_ce, needs_teacher=True, off_policy_ok=True),
    "grpo": Objective(grpo, needs_teacher=False, advantage="group", continuous_ok=True),
    "ppo": Objective(ppo, needs_teacher=False, needs_value=True, advantage="gae",
                     continuous_ok=True),
    "rpd": Objective(rpd, needs_teacher=True, needs_value=True, advantage="gae",
                     teacher_mean=True, continuous_ok=True),
    "reverse_kl+grpo": Objective(reverse_kl_grpo, needs_teacher=True, advantage="group"),
}


def get(name: str, **hparams) -> Callable[[Outputs, object], tuple]:
  """The objective ``name`` with the hyper-parameters it accepts bound (others ignored)."""
  if name not in OBJECTIVES:
    raise ValueError(f"config.objective={name!r} is not one of {sorted(OBJECTIVES)}")
  fn = OBJECTIVES[name].fn
  accepted = inspect.signature(fn).parameters
  return functools.partial(fn, **{k: v for k, v in hparams.items() if k in accepted})


__all__ = ["OBJECTIVES", "Objective", "get", "Metrics", "Outputs", "gather", "masked_mean",
           "token_metrics", "reverse_kl", "reverse_kl_exact", "forward_kl", "hard_ce", "grpo",
           "ppo", "rpd", "reverse_kl_grpo", "teacher_mse", "clipped_policy_loss", "action_log_probs",
           "group_advantages", "gae", "normalize", "cosine_weight", "refill_plan"]
