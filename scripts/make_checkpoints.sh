#!/usr/bin/env bash
# The distillation starting points of one suite, in one script (fixed seeds; every step is
# skipped when its output exists, and the SFT runs resume from their workdirs):
#   1. demos from the scripted experts (python -m opd_jax.collect),
#   2. the teacher: SFT on all DEMOS demos per task,
#   3. the one-demo student: SFT on the first demo of each task, SHARING THE TEACHER'S
#      ACTION STATISTICS (data.stats_path=TEACHER/action_stats.json): the OPD trainer
#      refuses a teacher whose statistics differ from the student's,
#   4. greedy evaluation of both on the fixed evaluation states (python -m opd_jax.evaluate).
#
#   scripts/make_checkpoints.sh                        # libero_object, 64x64 (what pretrained/ holds)
#   SHORT=spatial SUITE=libero_spatial scripts/make_checkpoints.sh   # another suite
#   TEACHER_STEPS=20000 scripts/make_checkpoints.sh --config.optim.lr=3e-4   # extra SFT flags
#
# The model of both runs is configs/libero.py's (RECIPE: 4 layers, width 128, Octo's conv
# stem, 5.0M parameters). Measured on the 2-core CPU for pretrained/ (benchmarks/RESULTS.md):
# collection 299 s; the teacher's 8000 steps 1 h 29 min while sharing the CPU (0.35-0.4 s per
# step when alone); the student's 500 steps 10.5 min, shared. Then, e.g.:
#   python -m opd_jax.train --config configs/libero.py:spatial \
#     --config.student.init=runs/sft_spatial_1demo \
#     --config.teacher.kind=checkpoint --config.teacher.checkpoint=runs/sft_spatial_teacher
# and to ship them: python -m opd_jax.pretrained (see pretrained/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

SHORT=${SHORT:-object}                      # configs/libero.py suite argument
SUITE=${SUITE:-libero_object}
SIZE=${SIZE:-64}                            # image size (collection and models)
DEMOS=${DEMOS:-50}                          # teacher demos per task
DATA=${DATA:-data/${SUITE}_${SIZE}.hdf5}
TEACHER=${TEACHER:-runs/sft_${SHORT}_teacher}
STUDENT=${STUDENT:-runs/sft_${SHORT}_1demo}
TEACHER_STEPS=${TEACHER_STEPS:-8000}
STUDENT_STEPS=${STUDENT_STEPS:-500}
EVAL_EPISODES=${EVAL_EPISODES:-10}          # per task, fixed evaluation initial states

if [ ! -f "$DATA" ]; then
  python -m opd_jax.collect --config.suite="$SUITE" --config.demos_per_task="$DEMOS" \
    --config.image_size="$SIZE" --config.batch=32 --config.out="$DATA"
fi

python -m opd_jax.sft --config "configs/libero.py:${SHORT},sft" \
  --config.env.image_size="$SIZE" --config.data.path="$DATA" \
  --config.data.demos_per_task="$DEMOS" --config.sft.steps="$TEACHER_STEPS" \
  --config.eval.every=0 --config.checkpoint.every=250 --config.workdir="$TEACHER" "$@"

python -m opd_jax.sft --config "configs/libero.py:${SHORT},sft" \
  --config.env.image_size="$SIZE" --config.data.path="$DATA" \
  --config.data.demos_per_task=1 --config.data.stats_path="$TEACHER/action_stats.json" \
  --config.sft.steps="$STUDENT_STEPS" --config.checkpoint.every=250 \
  --config.eval.every=0 --config.workdir="$STUDENT" "$@"

for RUN in "$TEACHER" "$STUDENT"; do
  if [ ! -f "$RUN/eval_final/results.md" ]; then
    python -m opd_jax.evaluate --config.checkpoint="$RUN" --config.episodes="$EVAL_EPISODES" \
      --config.batch=50 --config.out="$RUN/eval_final"
  fi
done
echo "teacher: $TEACHER/eval_final/results.md  student: $STUDENT/eval_final/results.md"
