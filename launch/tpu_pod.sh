#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice: creates the TPU VM (unless CREATE=0), copies this repository to every
# worker, installs it, and runs `python -m mlst_jax.main --distributed` on all workers at once. On TPU,
# jax.distributed.initialize() finds the other workers by itself (no coordinator arguments).
#
#   TPU_NAME=mlst-v4-32 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 launch/tpu_pod.sh [--dry-run] -- \
#       --config configs/mustc.py:multilingual --workdir /mnt/shared/runs/mustc_m \
#       --config.data.manual_dir=/mnt/shared/MUST-C --config.data.data_dir=/mnt/shared/tfds
#
#   # XMEF (seed 001) from pretrained HF directories: 4 workers x 4 chips on a v4-32, a per-process budget of
#   # 8 utterances x 15 s for each of a worker's 4 chips (4 x 1,920,000 samples)
#   TPU_NAME=mlst-v4-32 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 launch/tpu_pod.sh -- \
#       --config configs/xmef_covost_large.py --workdir /mnt/shared/runs/xmef \
#       --config.init.encoder=/mnt/shared/ckpt/wav2vec2-large-lv60 \
#       --config.init.decoder=/mnt/shared/ckpt/mbart-large-50 \
#       --config.data.manual_dir=/mnt/shared/covost2 --config.data.data_dir=/mnt/shared/tfds \
#       --config.data.max_frames_per_batch=7680000 --config.mesh.fsdp=8
#
# Everything after `--` goes to mlst_jax.main on every worker. The workdir must be one directory all workers
# share (Orbax writes each worker's shards there), e.g. a Filestore NFS or gcsfuse mount; the data paths must
# exist on every worker. Environment:
#   TPU_NAME (mlst-pod), ZONE (us-central2-b), ACCELERATOR_TYPE (v4-32), RUNTIME_VERSION (tpu-ubuntu2204-base)
#   PROJECT                  gcloud project (default: gcloud's configured project)
#   CREATE (1)               create the TPU VM first; 0 reuses an existing one
#   SETUP (1)                copy the repository and install it on the workers; 0 skips (already set up)
#   REMOTE_DIR (mlst_jax)    repository directory on the workers, relative to the home directory
#   DRY_RUN=1 or --dry-run   print the commands instead of running them
set -euo pipefail

TPU_NAME=${TPU_NAME:-mlst-pod}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
PROJECT=${PROJECT:-}
CREATE=${CREATE:-1}
SETUP=${SETUP:-1}
REMOTE_DIR=${REMOTE_DIR:-mlst_jax}
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

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
archive=${TMPDIR:-/tmp}/mlst_jax_src.tar.gz
gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && where+=(--project="$PROJECT")

run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

# One quoted command line for the workers' shells.
main_cmd=$(printf '%q ' python3 -m mlst_jax.main --distributed "$@")
jax_version=$(sed -n 's/^jax==//p' "$repo/requirements.txt")

if [[ "$CREATE" == 1 ]]; then
  run "${gcloud_tpu[@]}" create "$TPU_NAME" "${where[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION"
fi
if [[ "$SETUP" == 1 ]]; then
  # The working tree's files that git tracks or would track (uncommitted edits included; no .venv, no runs).
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "git -C $(printf '%q' "$repo") ls-files -z --cached --others --exclude-standard | tar -czf $(printf '%q' "$archive") -C $(printf '%q' "$repo") --null -T -"
  else
    git -C "$repo" ls-files -z --cached --others --exclude-standard | tar -czf "$archive" -C "$repo" --null -T -
  fi
  run "${gcloud_tpu[@]}" scp "$archive" "$TPU_NAME:mlst_jax_src.tar.gz" "${where[@]}" --worker=all
  run "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command="mkdir -p ~/$REMOTE_DIR && \
tar -xzf ~/mlst_jax_src.tar.gz -C ~/$REMOTE_DIR && cd ~/$REMOTE_DIR && \
python3 -m pip install -q -r requirements.txt 'jax[tpu]==$jax_version' && python3 -m pip install -q --no-deps -e ."
fi
run "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command="cd ~/$REMOTE_DIR && $main_cmd"
