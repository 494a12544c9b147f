"""On-policy distillation on the LIBERO-style suites.

  python -m opd_jax.train --config configs/libero.py               # spatial, laptop defaults
  python -m opd_jax.train --config configs/libero.py:goal           # another suite
  python -m opd_jax.train --config configs/libero.py:spatial,runlocal   # tiny smoke run
  python -m opd_jax.train --config configs/libero.py \\
      --config.objective=forward_kl --config.student.init=runs/sft_1demo \\
      --config.teacher.kind=checkpoint --config.teacher.checkpoint=runs/sft_teacher

The argument is ``SUITE[,VARIANT...]`` with SUITE in spatial/object/goal/long
and variants ``runlocal`` (seconds-long smoke run) and ``pod`` (bigger model
and batches; batch sizes are per device). Every field is overridable with
``--config.a.b=value``. For SFT (opd_jax.sft) use ``configs/libero.py:sft``.
"""
from __future__ import annotations

import ml_collections

SUITES = {"spatial": "libero_spatial", "object": "libero_object", "goal": "libero_goal",
          "long": "libero_10"}


def model_config(size: str = "nano") -> ml_collections.ConfigDict:
  """Fields of opd_jax.models.ModelConfig (-1 or () = from size).

  conv_channels: the image stem's stride-2 convs, e.g. ``(32, 96, 192)`` gives
  (64 / 8)^2 = 64 patch tokens per 64^2 camera, Octo's four-conv stem 16.
  """
  return ml_collections.ConfigDict(dict(
      size=size, num_layers=-1, width=-1, num_heads=-1, mlp_dim=-1,
      chunk=8, history=1, num_readouts=1, text_len=32, vocab_size=4096, dropout=0.0,
      proprio_encoding="pose_rotvec", action_head_hidden=0, conv_channels=()))


def get_config(arg: str = "spatial") -> ml_collections.ConfigDict:
  parts = [p for p in (arg or "spatial").split(",") if p]
  suite = next((p for p in parts if p in SUITES), "spatial")
  variants = [p for p in parts if p not in SUITES]
  unknown = set(variants) - {"runlocal", "pod", "sft"}
  if unknown:
    raise ValueError(f"configs/libero.py: unknown argument(s) {sorted(unknown)}; "
                     f"use SUITE[,runlocal|pod|sft] with SUITE in {sorted(SUITES)}")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = f"runs/opd_{suite}"
  # control: how the arm tracks its IK joint targets, "torque" (computed torque: straight
  # Cartesian motion, the default) or "servo" (position actuators: a command also moves the hand
  # off its axis; checkpoints made before 2026-12); envs/control.py. A checkpoint only runs
  # under the law it was trained with.
  c.env = dict(suite=SUITES[suite], image_size=64, substeps=5, max_episode_steps=-1,
               control="torque")

  # Student: a checkpoint directory to start from ("" = fresh initialisation).
  c.student = dict(init="", model=model_config("nano"))
  # Teacher: "scripted" (the privileged expert; embedded default) or "checkpoint".
  # floor: scripted teacher's uniform mixture weight (0 = a pure Gaussian of width sigma).
  c.teacher = dict(kind="scripted", checkpoint="", sigma=0.1, floor=0.0, lookahead="simulate",
                   temperature=1.0)

  # reverse_kl (the paper's sampled-token estimator) | reverse_kl_exact (same expected gradient,
  # summed over the 256 bins: far lower variance, the default) | forward_kl | hard_ce
  c.objective = "reverse_kl_exact"
  c.clip_eps = -1.0            # > 0: PPO clipping (with optim.epochs > 1)

  # An iteration is a batch of episodes: prompts x group worlds per device, each a
  # task and initial state (the group shares both), rolled to the end of the episode.
  # temperature: SimpleVLA-RL / VLA-OPD sample at 1.6 from an SFT student; 1.0 here, where the
  # default student starts from scratch.
  c.rollout = dict(prompts=4, group=2, temperature=1.0, policy_steps=-1)
  # epochs x minibatches gradient steps per batch of episodes (minibatches split the policy
  # steps). The paper takes one step per batch from an SFT student; a fresh student needs more.
  # unroll: the gradient steps are unrolled in the compiled iteration (fast on CPU, where a
  # convolution's gradient in a loop is ~14x slower; compile time grows per step); False loops.
  c.optim = dict(optimizer="adamw", lr=3e-4, warmup=10, weight_decay=0.0, grad_clip=1.0, epochs=2,
                 minibatches=4, b1=0.9, b2=0.999, unroll=True)
  c.iterations = 300

  c.log_every = 1
  c.eval = dict(every=25, episodes_per_task=2, batch=20, videos=2)
  # average >= 2: after the last iteration, the mean parameters of the last `average` kept
  # checkpoints (opd_jax.average) go to WORKDIR/average and are evaluated (eval_average/*).
  c.checkpoint = dict(every=10, keep=3, average=0)
  c.mesh = dict(data=-1)       # -1: all devices

  if "runlocal" in variants:
    c.env.image_size = 32
    c.env.max_episode_steps = 16
    c.rollout.prompts, c.rollout.group = 2, 1
    c.optim.minibatches = 1
    c.iterations = 2
    c.eval = dict(every=2, episodes_per_task=1, batch=10, videos=1)
    c.checkpoint.every = 1
  if "pod" in variants:
    c.student.model.size = "small"
    c.env.image_size = 128
    c.rollout.prompts, c.rollout.group = 8, 8
    c.optim.lr = 5e-5
  if "sft" in variants:
    c.workdir = f"runs/sft_{suite}"
    c.data = dict(path="", demos_per_task=-1, stats_path="", val_fraction=0.0)
    # shift: random-shift augmentation in pixels (DrQ; matters most with few demos).
    # init: a policy checkpoint to fine-tune (architecture, params and action statistics from
    # it; a fresh optimiser and schedule); "" trains from scratch.
    c.sft = dict(steps=2000, batch=64, shift=4, init="")
    c.optim.lr, c.optim.warmup, c.optim.weight_decay = 3e-4, 100, 0.01
    c.optim.schedule, c.optim.final_lr_frac = "cosine", 0.1
    c.log_every = 50
    c.eval.every = 500
    c.eval.episodes_per_task = 10
    c.checkpoint.every = 500
    if "runlocal" in variants:
      c.sft.steps, c.sft.batch, c.log_every, c.optim.warmup = 4, 8, 1, 1
      c.eval.every, c.eval.episodes_per_task, c.checkpoint.every = 4, 1, 2
  return c
