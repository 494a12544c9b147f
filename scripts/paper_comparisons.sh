#!/bin/bash
# Every learning experiment of the paper's comparison on libero_object, one after another
# (resumable: re-run the same command; finished runs are skipped, stopped runs resume from
# their checkpoints), then the 500-episode evaluations and the main table.
#   scripts/paper_comparisons.sh            # all of it, seed 0 (about 3 h of the 2-core CPU)
#   STAGES="efficiency ablation" SEEDS=1,2 scripts/paper_comparisons.sh
# Physics: MuJoCo's C engine (benchmarks/learning.py --physics c, ~5x MJX's rate on a CPU).
# Logs: runs/learning/STAGE.log; tables: benchmarks/learning/EXPERIMENT.md and
# docs/learning_EXPERIMENT.png; the main table: runs/eval50_c/ and docs/eval50_c.png.
set -euo pipefail
cd "$(dirname "$0")/.." && . .venv/bin/activate
STAGES=${STAGES:-"efficiency opd_lr opd_lr200 eval50 grpo180 groups forgetting expert ablation opd120 opd_grpo120 eval50"}
seeds=${SEEDS:-0}
mkdir -p runs/learning
keep_it60() {  # an efficiency run's 60-iteration checkpoint (a main-table row), before the
  # 120-iteration stage continues the run and its checkpoint manager drops step 60
  local src=runs/learning/efficiency/$1/checkpoints/60 dst=runs/keep/$1_it60
  if [ -d "$src" ] && [ ! -d "$dst" ]; then mkdir -p "$dst" && cp -r "$src" "$dst/60"; fi
}
for stage in $STAGES; do
  case $stage in
    efficiency)  # OPD, GRPO and OPD+GRPO from the one-demo student, 60 iterations each
      python benchmarks/learning.py efficiency --seeds "$seeds" --iterations 60 --runs opd,grpo,opd_grpo ;;
    opd_lr)      # OPD at a 3x learning rate: faster, or unstable?
      python benchmarks/learning.py efficiency --seeds "$seeds" --iterations 60 --runs opd_lr1e-4 ;;
    opd_lr200)   # OPD at the 3x learning rate continued to 200 iterations (~25 min here)
      keep_it60 opd_lr1e-4_s0
      python benchmarks/learning.py efficiency --seeds "$seeds" --iterations 200 --runs opd_lr1e-4 ;;
    grpo180)     # GRPO continued to 3x the env steps OPD at lr 1e-4 took to 80% of the teacher
      python benchmarks/learning.py efficiency --seeds "$seeds" --iterations 180 --runs grpo ;;
    opd120)      # OPD continued: does it come within 10 points of the teacher?
      keep_it60 opd_s0
      python benchmarks/learning.py efficiency --seeds "$seeds" --iterations 120 --runs opd ;;
    opd_grpo120) # OPD+GRPO, the best arm at 60 iterations, continued likewise
      keep_it60 opd_grpo_s0
      python benchmarks/learning.py efficiency --seeds "$seeds" --iterations 120 --runs opd_grpo ;;
    ablation|forgetting|expert|groups)
      python benchmarks/learning.py "$stage" --seeds "$seeds" --iterations 40 ;;
    eval50)      # all 50 evaluation states per task, the runs beside the shipped pair (each
                 # at the iteration its name gives: a run not there yet is skipped)
      keep_it60 opd_s0; keep_it60 opd_grpo_s0; keep_it60 opd_lr1e-4_s0
      PHYSICS=c scripts/eval50.sh teacher=pretrained/libero_object_teacher \
        grpo_teacher=runs/grpo_object_teacher onedemo=pretrained/libero_object_1demo \
        opd_60it=runs/keep/opd_s0_it60 opd_120it=runs/learning/efficiency/opd_s0/checkpoints/120 \
        opd_grpo=runs/keep/opd_grpo_s0_it60 opd_grpo_120it=runs/learning/efficiency/opd_grpo_s0/checkpoints/120 \
        opd_lr1e-4=runs/keep/opd_lr1e-4_s0_it60 opd_lr1e-4_200it=runs/learning/efficiency/opd_lr1e-4_s0/checkpoints/200 \
        grpo=runs/learning/efficiency/grpo_s0/checkpoints/60 ;;
    *) echo "unknown stage $stage (efficiency opd_lr opd_lr200 grpo180 opd120 opd_grpo120 ablation forgetting expert groups eval50)"
       exit 2 ;;
  esac >> "runs/learning/$stage.log" 2>&1
  echo "$stage done ($(date -u +%H:%M))"
done
