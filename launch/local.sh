#!/usr/bin/env bash
# Several JAX processes on this machine, talking through a local coordinator (CPU collectives
# via gloo): the multi-host path of a pod, run where it can be tested.
#
#   NPROC=2 launch/local.sh opd_jax.train --config configs/libero.py:object,runlocal \
#       --config.workdir=runs/two_proc
#
# Each process gets JAX_PROCESS_ID=i of JAX_NUM_PROCESSES=NPROC and the module's arguments
# plus --distributed. Process 0's output goes to the terminal, every process's to
# LOGDIR/process_i.log, its pid to LOGDIR/process_i.pid (default LOGDIR: a fresh directory
# under /tmp). The script waits for all and
# exits with the first non-zero status; Ctrl-C (or SIGTERM) is passed on to every process.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,12p' "$0"; exit 2; }
NPROC="${NPROC:-2}"
PORT="${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
LOGDIR="${LOGDIR:-$(mktemp -d)}"
mkdir -p "$LOGDIR"
MODULE="$1"
shift
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
for ((i = 0; i < NPROC; i++)); do
  : > "$LOGDIR/process_$i.log"   # exists before tail follows it
  JAX_COORDINATOR_ADDRESS="127.0.0.1:$PORT" JAX_NUM_PROCESSES="$NPROC" JAX_PROCESS_ID="$i" \
    python -m "$MODULE" --distributed "$@" > "$LOGDIR/process_$i.log" 2>&1 &
  pids+=("$!")
  echo "$!" > "$LOGDIR/process_$i.pid"
done
tail -n +1 -f "$LOGDIR/process_0.log" --pid "${pids[0]}" &
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || { rc=$?; [ "$status" -ne 0 ] || status=$rc; }
done
wait || true
echo "logs: $LOGDIR" >&2
exit "$status"
