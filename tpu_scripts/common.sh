# Shared by the tpu_scripts (sourced, not run).

# The script's header comment (from line 2 to `set -euo pipefail`), as its --help.
print_help() {
  sed -n '2,/^set -euo pipefail$/p' "$1" | sed '$d; s/^# \{0,1\}//'
}

# Runs WORKER_SCRIPT on every worker of TPU in ZONE, or with DRY_RUN set prints what it
# would run and runs nothing.
on_every_worker() {
  local tpu=$1 zone=$2 worker_script=$3
  local command=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all)
  if [ -n "${DRY_RUN:-}" ]; then
    echo "dry run: would run on every worker of $tpu:"
    printf '%q ' "${command[@]}"; echo '--command "$WORKER_SCRIPT", with WORKER_SCRIPT:'
    echo "$worker_script"
    return 0
  fi
  "${command[@]}" --command "$worker_script"
}
