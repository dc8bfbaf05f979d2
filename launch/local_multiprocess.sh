#!/usr/bin/env bash
# Runs a multi-process training job on this machine: N processes of `python -m mlst_jax.main` on CPU, each
# with its own fake CPU devices, connected by jax.distributed (gloo collectives) through a coordinator on
# 127.0.0.1. A local stand-in for a multi-host pod: every process feeds its shard of each global batch.
#
#   launch/local_multiprocess.sh [--dry-run] -- --config configs/synth.py:tiny --workdir /tmp/mp \
#       --config.data.manual_dir=/tmp/synth_corpus --config.data.data_dir=/tmp/mp/tfds
#
#   # XMEF (tiny, from random weights) on the synthetic corpus in the CoVoST 2 layout
#   # (mlst data synth --out /tmp/synth --size tiny --layouts covost2); the sample budget is per process
#   launch/local_multiprocess.sh -- --config configs/xmef_synth_tiny.py --workdir /tmp/mp_xmef \
#       --config.data.manual_dir=/tmp/synth/covost2 --config.data.data_dir=/tmp/mp_xmef/tfds
#
# Everything after `--` goes to mlst_jax.main. Environment:
#   NUM_PROCESSES (2)        processes to start
#   DEVICES_PER_PROCESS (2)  fake CPU devices of each process (XLA_FLAGS)
#   PORT (12355)             coordinator port on 127.0.0.1
#   PYTHON (python)          interpreter with mlst_jax installed
#   LOG_DIR                  when set, process i writes $LOG_DIR/process_<i>.out (stdout) and .err (stderr)
#   DRY_RUN=1 or --dry-run   print the commands instead of running them
set -euo pipefail

NUM_PROCESSES=${NUM_PROCESSES:-2}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-2}
PORT=${PORT:-12355}
PYTHON=${PYTHON:-python}
LOG_DIR=${LOG_DIR:-}
DRY_RUN=${DRY_RUN:-0}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; break ;;
    *) echo "usage: $0 [--dry-run] -- MAIN_ARGS..." >&2; exit 2 ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "usage: $0 [--dry-run] -- MAIN_ARGS...  (at least --config and --workdir)" >&2
  exit 2
fi
if ! [[ "$NUM_PROCESSES" =~ ^[1-9][0-9]*$ && "$DEVICES_PER_PROCESS" =~ ^[1-9][0-9]*$ ]]; then
  echo "NUM_PROCESSES and DEVICES_PER_PROCESS must be positive integers" >&2
  exit 2
fi

xla_flags="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${DEVICES_PER_PROCESS}"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM

[[ -n "$LOG_DIR" && "$DRY_RUN" != 1 ]] && mkdir -p "$LOG_DIR"
for ((i = 0; i < NUM_PROCESSES; i++)); do
  cmd=(env "XLA_FLAGS=${xla_flags# }" JAX_PLATFORMS=cpu JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo
       "$PYTHON" -m mlst_jax.main "--coordinator_address=127.0.0.1:${PORT}"
       "--num_processes=${NUM_PROCESSES}" "--process_id=${i}" "$@")
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "${cmd[@]}"
    [[ -n "$LOG_DIR" ]] && printf '> %q 2> %q' "$LOG_DIR/process_$i.out" "$LOG_DIR/process_$i.err"
    echo
  elif [[ -n "$LOG_DIR" ]]; then
    "${cmd[@]}" > "$LOG_DIR/process_$i.out" 2> "$LOG_DIR/process_$i.err" &
    pids+=($!)
  else
    "${cmd[@]}" &
    pids+=($!)
  fi
done

# The others would wait for a failed process forever: stop them all at the first failure.
status=0
for ((n = 0; n < ${#pids[@]}; n++)); do
  if ! wait -n; then
    [[ "$status" == 0 ]] && echo "a process failed; stopping the others" >&2
    status=1
    kill "${pids[@]}" 2>/dev/null || true
  fi
done
exit "$status"
