#!/usr/bin/env bash
# One GPU host (all its GPUs on the `data` mesh axis):
#
#   launch/gpu.sh [--config.* overrides]
#
# Several hosts: run the same command on each with --distributed and the coordinator variables
# JAX reads (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), or under SLURM, where
# jax.distributed.initialize() discovers them.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${CONFIG:-configs/libero.py:spatial}"
[ -d .venv ] || { python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[cuda12]==0.9.2'; }
exec .venv/bin/python -m opd_jax.train --config "$CONFIG" "$@"
