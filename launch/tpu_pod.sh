#!/usr/bin/env bash
# The OPD trainer on every worker of a Cloud TPU VM pod slice: create, install, run, stream
# the logs, tear down.
#
#   TPU=my-v5e-32 ZONE=us-west4-a WORKDIR=gs://my-bucket/opd_spatial launch/tpu_pod.sh [--config.* flags]
#
# Variables:
#   TPU, ZONE, WORKDIR   the slice's name, its zone, and the run's workdir (gs://: every worker
#                        writes the checkpoint together, worker 0 the metrics and evaluations)
#   CONFIG               default configs/libero.py:spatial,pod (batch sizes are per device)
#   TYPE, RUNTIME        set TYPE (e.g. v5litepod-32) to create the slice first; RUNTIME is its
#                        software version (default v2-alpha-tpuv5-lite)
#   DELETE=1             delete the slice when the run ends (also after a failure)
#
# Each worker gets this checkout (without runs/, data/, .venv), installs it with jax[tpu], and
# runs the same command with --distributed (jax.distributed.initialize() finds the coordinator
# on Cloud TPU). gcloud streams every worker's output to this terminal.
# A preempted slice: re-run this script; the job resumes from WORKDIR's last checkpoint.
# Not yet exercised on a real pod (none was available); the multi-process path it relies on is
# tested with two local processes (tests/test_multiprocess.py, launch/local.sh).
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR (a gs:// path)}"
CONFIG="${CONFIG:-configs/libero.py:spatial,pod}"
cd "$(dirname "$0")/.."

if [ -n "${TYPE:-}" ]; then
  gcloud compute tpus tpu-vm create "$TPU" --zone "$ZONE" --accelerator-type "$TYPE" \
    --version "${RUNTIME:-v2-alpha-tpuv5-lite}"
fi
if [ "${DELETE:-0}" = 1 ]; then
  trap 'gcloud compute tpus tpu-vm delete "$TPU" --zone "$ZONE" --quiet' EXIT
fi

src="$(mktemp -d)/opd_jax_src.tgz"
tar czf "$src" --exclude=.venv --exclude=runs --exclude=data --exclude=.git .
gcloud compute tpus tpu-vm scp "$src" "$TPU":~/opd_jax_src.tgz --zone "$ZONE" --worker=all
printf -v flags '%q ' "$@"
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  set -e; mkdir -p opd_jax && tar xzf opd_jax_src.tgz -C opd_jax && cd opd_jax &&
  python3 -m venv .venv && . .venv/bin/activate && pip install -q -e . 'jax[tpu]==0.9.2' &&
  python -m opd_jax.train --distributed --config $CONFIG --config.workdir=$WORKDIR $flags"
