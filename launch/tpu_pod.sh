#!/usr/bin/env bash
# Runs the OPD trainer on every worker of a Cloud TPU VM pod slice.
#
#   TPU=my-v5e-32 ZONE=us-west4-a WORKDIR=gs://my-bucket/opd_spatial launch/tpu_pod.sh [extra --config.* flags]
#
# Each worker installs the package from this checkout (copied with `gcloud ... scp`), then runs
# the same command; `--distributed` makes opd_jax.train call jax.distributed.initialize(), which
# on Cloud TPU discovers the coordinator itself. Batch sizes in the config are per device.
# Not yet exercised on a real pod (no TPU was available while writing it); the multi-device path
# is tested on 8 simulated CPU devices (tests/test_train.py::test_eight_devices_match_one_device).
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR (a gs:// path)}"
CONFIG="${CONFIG:-configs/libero.py:spatial,pod}"
cd "$(dirname "$0")/.."
tar czf /tmp/opd_jax_src.tgz --exclude=.venv --exclude=runs --exclude=data .
gcloud compute tpus tpu-vm scp /tmp/opd_jax_src.tgz "$TPU":~/ --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  set -e; mkdir -p opd_jax && tar xzf opd_jax_src.tgz -C opd_jax && cd opd_jax &&
  python3 -m venv .venv && . .venv/bin/activate && pip install -q -e . 'jax[tpu]==0.9.2' &&
  python -m opd_jax.train --distributed --config $CONFIG --config.workdir=$WORKDIR $*"
