#!/bin/bash
# GRPO refinement of the shipped libero_object teacher (resumable: re-run the same command).
# Temperature 1.6 (SimpleVLA-RL): at 1.0 the teacher's sampled episodes all succeeded (no group
# carried signal). Writes runs/grpo_object_teacher/ and appends its log to runs/grpo_object_teacher.log.
cd "$(dirname "$0")/.." && . .venv/bin/activate
nice -n 5 python -m opd_jax.train --config configs/libero.py --config.objective=grpo \
  --config.student.init=pretrained/libero_object_teacher --config.rollout.temperature=1.6 \
  --config.rollout.prompts=2 --config.rollout.group=4 --config.rl.refill_rounds=1 \
  --config.optim.lr=1e-5 --config.iterations=400 --config.eval.every=20 --config.eval.videos=0 \
  --config.checkpoint.every=5 --config.workdir=runs/grpo_object_teacher >> runs/grpo_object_teacher.log 2>&1
