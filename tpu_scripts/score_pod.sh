#!/usr/bin/env bash
# Score a family on every host of a TPU pod slice (multi-host JAX); run from your
# workstation after tpu_scripts/setup.sh.
#   tpu_scripts/score_pod.sh [--dry_run] [--detach] TPU_NAME ZONE -- \
#       --family gs://B/fam/manifest.json --data_dir gs://B/data --out gs://B/results \
#       [--tasks T] [--variants V] ...
#   tpu_scripts/score_pod.sh --help
# The arguments after `--` reach `invscale score` on every host unchanged. Every host runs
# the same command: `jax.distributed.initialize()` finds its peers (INVSCALE_TPU_POD=1),
# every host builds the same request list and feeds its devices' share of each batch, and
# only host 0 reads and writes the results. gs:// URLs need nothing shared: every host
# reads the manifest, its checkpoints (each only the slices its devices hold) and the task
# files from the bucket, with the TPU VM's service account. A local --family or --data_dir
# must exist on every host, a local --out is on host 0's disk.
# Model parallelism: add --model_parallel N.
#
# The run survives the SSH session: on each worker `invscale score` runs in a session of
# its own (setsid nohup), its output in ~/invscale-jax/logs/score-RUN_ID.log and its exit
# status, when it ends, in score-RUN_ID.exit beside it (RUN_ID: the start time, UTC). The
# script then follows every worker's log until the run ends and exits with the highest
# status; if the connection drops (or you press Ctrl-C) the run goes on: look at the logs
#   gcloud compute tpus tpu-vm ssh TPU_NAME --zone ZONE --worker=all \
#       --command 'tail -n 5 invscale-jax/logs/score-RUN_ID.*'
# or run the same command again later: it resumes from the chunks already written.
#   --detach   start the run and return at once (the logs as above)
#   --dry_run  print the gcloud command and the command each worker would run; run nothing
#              (an `invscale score --dry_run` on the pod goes after `--`, like any flag)
# Network: the workers read and write gs:// through storage.googleapis.com (an external
# IP, or Private Google Access); nothing else is fetched while scoring.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
USAGE="usage: score_pod.sh [--dry_run] [--detach] TPU_NAME ZONE -- INVSCALE_SCORE_ARGS...  (--help: what it does)"
DRY_RUN= DETACH=
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) print_help "$0"; exit 0 ;;
    --dry_run|--dry-run) DRY_RUN=1; shift ;;
    --detach) DETACH=1; shift ;;
    -*) echo "score_pod.sh: unknown option $1; $USAGE" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -lt 2 ]; then
  echo "score_pod.sh: need TPU_NAME and ZONE; $USAGE" >&2
  exit 2
fi
TPU=$1 ZONE=$2
shift 2; [ "${1:-}" = "--" ] && shift
ARGS=$(printf ' %q' "$@")
RUN_ID=${INVSCALE_RUN_ID:-$(date -u +%Y%m%dT%H%M%SZ)}
LOG="logs/score-$RUN_ID"
# Started in its own session, with no terminal and no pipe to the SSH session, so neither a
# hang-up nor the end of the session stops it.
RUN="INVSCALE_TPU_POD=1 .venv/bin/invscale score$ARGS; echo \$? > $LOG.exit"
WORKER_SCRIPT="cd invscale-jax && mkdir -p logs && : > $LOG.log && \
(setsid nohup bash -c $(printf %q "$RUN") >> $LOG.log 2>&1 < /dev/null &) && \
echo \"started invscale score on \$(hostname); log: ~/invscale-jax/$LOG.log\""
if [ -z "$DETACH" ]; then
  WORKER_SCRIPT="$WORKER_SCRIPT; \
tail -n +1 -f $LOG.log & TAIL=\$!; \
while [ ! -f $LOG.exit ]; do sleep 2; done; sleep 1; kill \$TAIL 2>/dev/null; \
exit \$(cat $LOG.exit)"
fi
[ -z "$DRY_RUN" ] && echo "run id $RUN_ID: each worker logs to ~/invscale-jax/$LOG.log"
on_every_worker "$TPU" "$ZONE" "$WORKER_SCRIPT"
