#!/usr/bin/env bash
# Score a family on every host of a TPU pod slice (multi-host JAX); run from your
# workstation after tpu_scripts/setup.sh.
#   tpu_scripts/score_pod.sh TPU_NAME ZONE -- --family gs://B/fam/manifest.json \
#       --data_dir gs://B/data --out gs://B/results [--tasks T] [--variants V] ...
# The arguments after `--` reach `invscale score` on every host unchanged. Every host runs
# the same command: `jax.distributed.initialize()` finds its peers (INVSCALE_TPU_POD=1),
# every host builds the same request list and feeds its devices' share of each batch, and
# only host 0 reads and writes the results. gs:// URLs need nothing shared: every host
# reads the manifest, its checkpoints (each only the slices its devices hold) and the task
# files from the bucket, with the TPU VM's service account. A local --family or --data_dir
# must exist on every host, a local --out is on host 0's disk.
# Model parallelism: add --model_parallel N.
set -euo pipefail
TPU=${1:?usage: score_pod.sh TPU_NAME ZONE -- INVSCALE_SCORE_ARGS...}
ZONE=${2:?usage: score_pod.sh TPU_NAME ZONE -- INVSCALE_SCORE_ARGS...}
shift 2; [ "${1:-}" = "--" ] && shift
ARGS=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  cd invscale-jax && INVSCALE_TPU_POD=1 .venv/bin/invscale score$ARGS"
