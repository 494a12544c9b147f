"""On-policy distillation on the LIBERO-style suites.

  python -m opd_jax.train --config configs/libero.py              # object: the shipped start
  python -m opd_jax.train --config configs/libero.py --config.teacher.kind=scripted
  python -m opd_jax.train --config configs/libero.py --config.student.init=   # fresh student
  python -m opd_jax.train --config configs/libero.py:goal          # another suite
  python -m opd_jax.train --config configs/libero.py:object,runlocal   # small smoke run
  python -m opd_jax.train --config configs/libero.py:spatial \\
      --config.objective=forward_kl --config.student.init=runs/sft_spatial_1demo \\
      --config.teacher.kind=checkpoint --config.teacher.checkpoint=runs/sft_spatial_teacher

The argument is ``SUITE[,VARIANT...]`` with SUITE in spatial/object/goal/long
(default object) and variants ``runlocal`` (a small smoke run: 32x32
images, 16-step episodes, nano student, scripted teacher) and ``pod`` (bigger
model and batches; batch sizes are per device). Every field is overridable with
``--config.a.b=value``. For SFT (opd_jax.sft) use ``configs/libero.py:SUITE,sft``.

libero_object starts from the policies shipped in ``pretrained/`` (a one-demo SFT
student and an SFT teacher trained on 50 demos per task; pretrained/README.md); the
other suites have none shipped yet and start a fresh student against the scripted
expert teacher (scripts/make_checkpoints.sh makes SFT starting points for any suite).
"""
from __future__ import annotations

import ml_collections

SUITES = {"spatial": "libero_spatial", "object": "libero_object", "goal": "libero_goal",
          "long": "libero_10"}


# The shipped policies' architecture: a 4-layer, 128-wide Octo-style transformer with Octo's
# conv stem (5.0M parameters). The nano size learned no usable policy from demos.
RECIPE = dict(size="custom", num_layers=4, width=128, num_heads=4, mlp_dim=512)
SHIPPED = {"object": ("pretrained/libero_object_1demo", "pretrained/libero_object_teacher")}


def model_config(size: str = "nano") -> ml_collections.ConfigDict:
  """Fields of opd_jax.models.ModelConfig (-1 or () = from size).

  kind: "octo" (the token transformer) or "cnn_gaussian" (RPD's student: a small CNN on the
  first camera, Gaussian actions, a value head; opd_jax/models/cnn.py).

  conv_channels: the image stem's stride-2 convs, e.g. ``(32, 96, 192)`` gives
  (64 / 8)^2 = 64 patch tokens per 64^2 camera, Octo's four-conv stem 16.
  """
  return ml_collections.ConfigDict(dict(
      size=size, num_layers=-1, width=-1, num_heads=-1, mlp_dim=-1,
      chunk=8, history=1, num_readouts=1, text_len=32, vocab_size=4096, dropout=0.0,
      proprio_encoding="pose_rotvec", action_head_hidden=0, conv_channels=(), kind="octo"))


def get_config(arg: str = "object") -> ml_collections.ConfigDict:
  parts = [p for p in (arg or "object").split(",") if p]
  suite = next((p for p in parts if p in SUITES), "object")
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
  # tasks: the task ids trained and evaluated on (() = every task of the suite).
  # physics: "mjx" or "c" (MuJoCo's C engine called from the compiled step: CPU hosts only;
  # the same model and arm law, arm joints within 1e-6 rad of MJX; envs/physics_c.py).
  c.env = dict(suite=SUITES[suite], image_size=64, substeps=5, max_episode_steps=-1,
               control="torque", tasks=(), physics="mjx")

  # Student: a checkpoint directory to start from ("" = a fresh initialisation of
  # student.model; with init, the checkpoint fixes the architecture).
  student_init, teacher_ckpt = SHIPPED.get(suite, ("", ""))
  # value_head: a scalar head on the readout embedding, for the value-based objectives (ppo,
  # rpd); a checkpoint student gets a freshly initialised one.
  c.student = dict(init=student_init, model=model_config("nano"), value_head=False)
  c.student.model.update(RECIPE)
  # Teacher: "checkpoint" (a policy checkpoint) or "scripted" (the privileged expert as a
  # distribution over bins; embedded, nothing downloaded). floor: the scripted teacher's
  # uniform mixture weight (0 = a pure Gaussian of width sigma).
  c.teacher = dict(kind="checkpoint" if teacher_ckpt else "scripted", checkpoint=teacher_ckpt,
                   sigma=0.1, floor=0.0, lookahead="simulate", temperature=1.0)

  # Distillation: reverse_kl (the paper's sampled-token estimator) | reverse_kl_exact (same
  # expected gradient, summed over the 256 bins: far lower variance, the default) |
  # forward_kl | hard_ce. RL: grpo (sparse success, group-normalised) | ppo (GAE, value head) |
  # rpd (ppo + teacher action-mean MSE) | reverse_kl+grpo (the paper's Distill + GRPO).
  c.objective = "reverse_kl_exact"
  c.clip_eps = -1.0            # > 0: PPO clipping of the reverse_kl estimator (epochs > 1)
  # The RL objectives' settings (opd_jax/objectives/rl.py). clip_low/high: the token-level
  # PPO-clip range (SimpleVLA-RL: 0.2 / 0.28). dynamic_sampling drops groups whose episodes
  # all succeeded or all failed; refill_rounds > 0 rolls up to that many more batches to
  # replace them. dense_coef: weight of the suites' dense shaping (0 = sparse success only,
  # ppo/rpd). teacher_weight: RPD's lambda, cosine-annealed to 0 over teacher_anneal
  # iterations (0 = constant). grpo_weight: the GRPO term in reverse_kl+grpo.
  c.rl = dict(clip_low=0.2, clip_high=0.28, dynamic_sampling=True, refill_rounds=0,
              gamma=0.99, gae_lambda=0.95, value_coef=0.5, entropy_coef=0.0, dense_coef=0.0,
              teacher_weight=1.0, teacher_anneal=0, grpo_weight=1.0)

  # An iteration is a batch of episodes: prompts x group worlds per device, each a
  # task and initial state (the group shares both), rolled to the end of the episode.
  # temperature: SimpleVLA-RL / VLA-OPD sample at 1.6 from an SFT student with 512 episodes
  # per update. With 8 episodes per update, sampling the shipped one-demo student at 1.0
  # visits states its greedy policy never reaches and greedy success fell (26% -> 2% in 20
  # iterations); at 0.5 it rose (26 -> 38% in 30 iterations; benchmarks/RESULTS.md).
  c.rollout = dict(prompts=4, group=2, temperature=0.5, policy_steps=-1)
  # DAgger-style aggregation (opd_jax/aggregate.py): keep the episodes of the last `worlds`
  # worlds (per device; a multiple of prompts x group) and add `replay` of them, drawn
  # uniformly, to every iteration's batch. Only for objectives that read the teacher's whole
  # distribution (reverse_kl_exact, forward_kl, hard_ce). 0 = off.
  c.aggregate = dict(worlds=0, replay=0)
  # epochs x minibatches gradient steps per batch of episodes (minibatches split the policy
  # steps). The paper takes one step per batch from an SFT student; a fresh student needs more.
  # Each gradient step is one compiled program called from Python (XLA:CPU runs a
  # convolution's gradient inside a compiled loop ~8x slower than alone).
  c.optim = dict(optimizer="adamw", lr=3e-4, warmup=10, weight_decay=0.0, grad_clip=1.0, epochs=2,
                 minibatches=4, b1=0.9, b2=0.999)
  c.iterations = 300
  if student_init:
    # Fine-tuning an SFT student: at 3e-4 the shipped one fell from 26% to 0% greedy success
    # within 25 iterations (its KL to the teacher doubled; benchmarks/RESULTS.md).
    c.optim.lr = 3e-5

  c.log_every = 1
  # Greedy evaluation on the first episodes_per_task fixed evaluation states of every task;
  # at_start: also before the first iteration (step 0), the curve's starting point. tasks: the
  # task ids evaluated (() = the trained ones, env.tasks; others measure forgetting).
  c.eval = dict(every=10, episodes_per_task=5, batch=25, videos=2, at_start=True, tasks=())
  # average >= 2: after the last iteration, the mean parameters of the last `average` kept
  # checkpoints (opd_jax.average) go to WORKDIR/average and are evaluated (eval_average/*).
  c.checkpoint = dict(every=10, keep=3, average=0)
  # Stop (exit 1, naming the last checkpoint) after this many iterations in a row whose every
  # gradient step was non-finite and skipped; 0 = never.
  c.stop_after_nonfinite = 5
  # resume_from: a checkpoint (of another run) whose weights start this one, with a fresh
  # optimiser and iteration count; the architecture is this config's and must match it. Only a
  # new workdir: one that holds checkpoints resumes from its own (the automatic resume).
  c.resume_from = ""
  # a data x fsdp mesh (data=-1: every device): the batch is split over all its devices, the
  # parameters, optimiser state and teacher over the fsdp ones (1: replicated)
  c.mesh = dict(data=-1, fsdp=1)
  # XLA:CPU's LLVM optimisation level for the programs (-1: XLA's default). 0 compiles ~2x
  # faster and runs ~3.5x slower: worth it only for runs shorter than their compile.
  c.llvm_opt_level = -1

  if "runlocal" in variants or "pod" in variants:
    c.student.init, c.teacher.kind, c.teacher.checkpoint = "", "scripted", ""
  if "runlocal" in variants:
    c.student.model = model_config("nano")
    c.env.image_size = 32
    c.env.max_episode_steps = 16
    c.rollout.prompts, c.rollout.group = 2, 1
    c.optim.minibatches = 1
    c.iterations = 2
    c.eval = dict(every=2, episodes_per_task=1, batch=10, videos=1, at_start=False, tasks=())
    c.checkpoint.every = 1
    c.llvm_opt_level = 0
  if "pod" in variants:
    c.student.model = model_config("small")
    c.env.image_size = 128
    c.rollout.prompts, c.rollout.group = 8, 8
    c.optim.lr = 5e-5
  if "sft" in variants:
    c.workdir = f"runs/sft_{suite}"
    # tasks: train on these task ids' demos only (() = all; the others measure forgetting)
    c.data = dict(path="", demos_per_task=-1, stats_path="", val_fraction=0.0, tasks=())
    # shift: random-shift augmentation in pixels (DrQ; matters most with few demos).
    # init: a policy checkpoint to fine-tune (architecture, params and action statistics from
    # it; a fresh optimiser and schedule); "" trains from scratch.
    c.sft = dict(steps=2000, batch=64, shift=4, init="")
    c.optim.lr, c.optim.warmup, c.optim.weight_decay = 6e-4, 100, 0.01
    c.optim.schedule, c.optim.final_lr_frac = "cosine", 0.1
    c.log_every = 50
    c.eval.every = 500
    c.eval.episodes_per_task = 10
    c.checkpoint.every = 500
    if "runlocal" in variants:
      c.sft.steps, c.sft.batch, c.log_every, c.optim.warmup = 4, 8, 1, 1
      c.eval.every, c.eval.episodes_per_task, c.checkpoint.every = 4, 1, 2
  return c
