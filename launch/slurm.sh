#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one task per node, every GPU of a node in that task.
#
#   sbatch --nodes=4 --gpus-per-node=8 launch/slurm.sh [--config.* overrides]
#   CONFIG=configs/libero.py:spatial,pod WORKDIR=/shared/runs/opd_spatial sbatch ... launch/slurm.sh
#
# Each task runs the same `python -m opd_jax.train --distributed`; jax.distributed.initialize()
# reads SLURM's variables (the coordinator is the first node), so no address is given here.
# WORKDIR must be on storage every node sees (a shared filesystem, or gs://...): all tasks
# write the checkpoint together, process 0 writes the metrics and evaluations. A job requeued
# after preemption resumes from WORKDIR's last checkpoint (SIGTERM saves one first).
#SBATCH --job-name=opd_jax
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --output=opd_jax_%j.log
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
CONFIG="${CONFIG:-configs/libero.py:spatial,pod}"
WORKDIR="${WORKDIR:-runs/opd_slurm}"
if [ ! -d .venv ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -e . 'jax[cuda12]==0.9.2'
fi
# srun starts one task per node and passes SLURM's SIGTERM on to each
srun --kill-on-bad-exit=1 .venv/bin/python -m opd_jax.train --distributed \
  --config "$CONFIG" --config.workdir="$WORKDIR" "$@"
