#!/usr/bin/env bash
# Score a family on every host of a TPU pod slice (multi-host JAX).
#   tpu_scripts/score_pod.sh TPU_NAME ZONE -- --family F --tasks T --variants V --data_dir D --out OUT
# Every host runs the same command: `jax.distributed.initialize()` finds its peers
# (INVSCALE_TPU_POD=1), every host builds the same request list and feeds its devices'
# share of each batch, and only process 0 writes results. OUT and the data dir must be
# readable by all hosts (the same path on each, e.g. a GCS FUSE mount or NFS); OUT is
# written by host 0 only. Model parallelism: add --model_parallel N.
set -euo pipefail
TPU=${1:?TPU name}; ZONE=${2:?zone}; shift 2; [ "${1:-}" = "--" ] && shift
ARGS=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  cd invscale-jax && INVSCALE_TPU_POD=1 JAX_PLATFORMS=tpu .venv/bin/invscale score $ARGS
"
