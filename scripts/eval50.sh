#!/bin/bash
# Greedy success of the libero_object policies on all 50 evaluation states per task (500
# episodes each), then one table with 95% intervals. Skips a policy already evaluated
# (runs/eval50/NAME/results.json); a missing run is reported and left out. The table and
# docs/eval50.png list every policy under runs/eval50/, the ones named first.
#   scripts/eval50.sh [NAME=CHECKPOINT ...]   (default: the shipped pair and the runs below)
#   PHYSICS=c scripts/eval50.sh ...   MuJoCo's C engine (~5x faster on a CPU host): results
#                                     in runs/eval50_c/ and docs/eval50_c.png
cd "$(dirname "$0")/.." && . .venv/bin/activate
physics=${PHYSICS:-mjx}
case $physics in mjx) suffix= ;; c) suffix=_c ;; *) echo "PHYSICS: mjx or c, got $physics"; exit 2 ;; esac
rows=("$@")
[ ${#rows[@]} -eq 0 ] && rows=(teacher=pretrained/libero_object_teacher
  one_demo=pretrained/libero_object_1demo opd=runs/opd_object grpo_teacher=runs/grpo_object_teacher)
done_rows=()
for row in "${rows[@]}"; do
  name=${row%%=*}; ckpt=${row#*=}
  out=runs/eval50$suffix/$name
  if [ ! -e "$ckpt" ]; then echo "skip $name: $ckpt not found"; continue; fi
  if [ ! -f "$out/results.json" ]; then
    nice -n 5 python -m opd_jax.evaluate --config.checkpoint="$ckpt" --config.episodes=50 \
      --config.physics="$physics" --config.videos=0 --config.out="$out" > "runs/eval50${suffix}_$name.log" 2>&1 ||
      { echo "$name failed: runs/eval50${suffix}_$name.log"; continue; }
  fi
  # kept in the repository beside the learning runs' metrics (runs/ does not survive a machine)
  mkdir -p "benchmarks/learning/eval50$suffix/$name" && cp "$out/results.json" "benchmarks/learning/eval50$suffix/$name/"
  done_rows+=("$name=$out")
done
# the table and plot hold every policy evaluated so far: these rows first, then the others
for out in runs/eval50$suffix/*/; do
  name=$(basename "$out")
  [ -f "$out/results.json" ] || continue
  case " ${done_rows[*]} " in *" $name="*) ;; *) done_rows+=("$name=${out%/}") ;; esac
done
python benchmarks/table.py "${done_rows[@]}" --plot "docs/eval50$suffix.png" \
  --title "libero_object, greedy, 50 evaluation states per task, $physics physics"
