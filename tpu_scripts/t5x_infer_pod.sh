#!/usr/bin/env bash
# Score a family with T5X's own infer.py on every host of a TPU pod slice, then turn its
# outputs into results and a report; run from your workstation after tpu_scripts/setup.sh
# (invscale-jax in ~/invscale-jax on every worker) and your own T5X install on the workers.
#   tpu_scripts/t5x_infer_pod.sh TPU_NAME ZONE --models MODELS --family MANIFEST \
#       --infer_dir gs://B/t5x_infer --out gs://B/results [--report gs://B/report] \
#       [--tasks memo-trap,neqa] [--variants zero_shot,1_shot] -- T5X_FLAGS...
# MODELS: a file on this machine, one model a line: `NAME CHECKPOINT GIN_FILE`, NAME as
#   in the family MANIFEST (its N, D and C), CHECKPOINT a checkpoint_<step> dir or a T5X
#   model dir (then T5X restores its latest checkpoint), GIN_FILE the model's T5X gin file
#   (e.g. t5x/examples/t5/t5_1_1/small.gin); `#` starts a comment.
# For every model, task and variant (default: every task, zero_shot), every worker runs
#   $T5X_PYTHON -m t5x.infer --gin_file=GIN_FILE --gin_file=t5x/configs/runs/infer.gin
#     --gin_file=~/invscale-jax/gin/t5x/score_invscale.gin
#     --gin.MIXTURE_OR_TASK_NAME="'invscale:<task>.<variant>'" --gin.CHECKPOINT_PATH=...
#     --gin.INFER_OUTPUT_DIR="'INFER_DIR/NAME'" --gin.DROPOUT_RATE=0.0 T5X_FLAGS...
# from $T5X_DIR (default ~/t5x, the T5X checkout; also the gin search path), with
# ~/invscale-jax on PYTHONPATH; one already written (its .COMPLETED marker there) is
# skipped, so a re-run resumes. T5X_FLAGS reach every run unchanged: the data dir and the
# vocabulary at least (--gin.INVSCALE_DATA_DIR="'gs://B/data'",
# --gin.INVSCALE_VOCABULARY="'...sentencepiece.model'"; see README, "Using the tasks from
# T5X"). Then worker 0 runs `invscale import t5x-infer` into --out and, with --report,
# `invscale report`.
# T5X_PYTHON (default python3) and T5X_DIR are read here and used on the workers.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;; esac
USAGE="usage: t5x_infer_pod.sh TPU_NAME ZONE --models FILE --family MANIFEST --infer_dir DIR --out RESULTS [--report DIR] [--tasks T,...] [--variants V,...] -- T5X_FLAGS..."
TPU=${1:?$USAGE}
ZONE=${2:?$USAGE}
shift 2
MODELS= FAMILY= INFER_DIR= OUT= REPORT= TASKS= VARIANTS=zero_shot
while [ $# -gt 0 ]; do
  case "$1" in
    --models|--family|--infer_dir|--out|--report|--tasks|--variants)
      [ $# -ge 2 ] || { echo "t5x_infer_pod.sh: $1 needs a value" >&2; exit 2; }
      declare "$(echo "${1#--}" | tr a-z A-Z)=$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "t5x_infer_pod.sh: unknown argument $1 ($USAGE)" >&2; exit 2 ;;
  esac
done
for name in MODELS FAMILY INFER_DIR OUT; do
  [ -n "${!name}" ] || { echo "t5x_infer_pod.sh: --$(echo $name | tr A-Z a-z) is required" >&2; exit 2; }
done
[ -f "$MODELS" ] || { echo "t5x_infer_pod.sh: $MODELS: no such models file" >&2; exit 2; }
LINES=() NAMES=()
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  line=${line%%#*}
  read -r -a fields <<< "$line" || true
  [ ${#fields[@]} -eq 0 ] && continue
  if [ ${#fields[@]} -ne 3 ]; then
    echo "t5x_infer_pod.sh: $MODELS:$lineno: expected NAME CHECKPOINT GIN_FILE, got ${#fields[@]} fields" >&2
    exit 2
  fi
  LINES+=("${fields[*]}") NAMES+=("${fields[0]}")
done < "$MODELS"
[ ${#LINES[@]} -gt 0 ] || { echo "t5x_infer_pod.sh: $MODELS: no models" >&2; exit 2; }
if [ -z "$TASKS" ]; then
  TASKS=hindsight-neglect,into-the-unknown,memo-trap,modus-tollens,neqa,pattern-match-suppression,prompt-injection,redefine,repetitive-algebra,resisting-correction,sig-figs
fi
INFER_DIR=${INFER_DIR%/}
q() { printf '%q' "$1"; }
T5X_ARGS=$(printf ' %q' "$@")

WORKER_SCRIPT=$(cat <<EOF
set -euo pipefail
INVSCALE=\$HOME/invscale-jax
T5X_DIR=$(q "${T5X_DIR:-}"); T5X_DIR=\${T5X_DIR:-\$HOME/t5x}
written() {  # T5X's marker of a finished output file
  "\$INVSCALE/.venv/bin/python" -c 'import sys; from invscale_jax import storage
sys.exit(0 if storage.is_file(sys.argv[1]) else 1)' "\$1"
}
while read -r name checkpoint gin <&3; do
  mode=specific
  case "\${checkpoint%/}" in */checkpoint_*) ;; *) mode=latest ;; esac
  for task in \$(echo $(q "$TASKS") | tr , ' '); do
    for variant in \$(echo $(q "$VARIANTS") | tr , ' '); do
      seqio_name="invscale:\${task//-/_}.\$variant"
      out=$(q "$INFER_DIR")/\$name
      if written "\$out/\$seqio_name-score.jsonl-00000-of-00001.COMPLETED" </dev/null; then
        echo "\$name \$seqio_name: already written"
        continue
      fi
      echo "\$name \$seqio_name: T5X infer"
      (cd "\$T5X_DIR" && PYTHONPATH="\$INVSCALE\${PYTHONPATH:+:\$PYTHONPATH}" \\
        $(q "${T5X_PYTHON:-python3}") -m t5x.infer --gin_search_paths="\$T5X_DIR" \\
        --gin_file="\$gin" --gin_file=t5x/configs/runs/infer.gin \\
        --gin_file="\$INVSCALE/gin/t5x/score_invscale.gin" \\
        --gin.MIXTURE_OR_TASK_NAME="'\$seqio_name'" --gin.CHECKPOINT_PATH="'\$checkpoint'" \\
        --gin.utils.RestoreCheckpointConfig.mode="'\$mode'" \\
        --gin.INFER_OUTPUT_DIR="'\$out'" --gin.DROPOUT_RATE=0.0$T5X_ARGS </dev/null)
    done
  done
done 3<<'MODELS'
$(printf '%s\n' "${LINES[@]}")
MODELS
EOF
)
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "$WORKER_SCRIPT"

DIRS=$(for name in "${NAMES[@]}"; do printf ' %q' "$INFER_DIR/$name"; done)
FINISH="cd invscale-jax && .venv/bin/invscale import t5x-infer --family $(q "$FAMILY") --out $(q "$OUT")$DIRS"
if [ -n "$REPORT" ]; then
  FINISH="$FINISH && .venv/bin/invscale report $(q "$OUT") --family $(q "$FAMILY") --out $(q "$REPORT")"
fi
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=0 --command "$FINISH"
