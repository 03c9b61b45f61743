#!/usr/bin/env bash
# Install invscale-jax on every worker of a Cloud TPU VM (run from your workstation).
#   tpu_scripts/setup.sh [--dry_run] TPU_NAME ZONE REPOSITORY [REF]
#   tpu_scripts/setup.sh --help
# --dry_run prints the gcloud command (and the script each worker would run) and runs
# nothing.
# REPOSITORY: what `git clone` takes (https://..., git@..., or a path on the workers);
# REF: a commit, tag or origin/BRANCH to check out (default: the default branch).
# Each worker gets ~/invscale-jax (the checkout) and ~/invscale-jax/.venv; a re-run
# updates both. The last step checks every worker: the package imports, the workers join
# one jax.distributed job, and each prints the devices it sees.
#
# Python: invscale-jax needs Python >= 3.11 (the pinned jax 0.10 publishes no wheels for
# older Pythons), while a TPU VM image has whatever its Ubuntu ships (3.10 on the 22.04
# images) and no root-free way to add another through apt or deadsnakes. So each worker
# gets `uv` from PyPI (`pip install --user`, into ~/.local; uv's standalone installer if
# there is no pip), and uv installs a standalone CPython 3.11 into ~/.local/share/uv:
# nothing system-wide, no sudo, whatever the image's own Python.
# jax[tpu]: the `tpu` extra installs jax and jaxlib at the versions constraints.txt pins,
# and the libtpu release that this jax version requires (from PyPI, or Google's libtpu
# index).
# From a checkout, not a wheel: the gin configs (gin/) live beside the package, which is
# installed in editable mode as `make setup` does.
#
# Network: every worker needs outbound access to the git REPOSITORY's host, to PyPI (uv,
# the packages, libtpu) and to storage.googleapis.com (Google's libtpu index; and, for
# scoring, the buckets): an external IP, or Cloud NAT / Private Google Access for a
# worker without one.
#
# INVSCALE_UV: the uv command run on the workers (default: `uv`, installed as above when
# missing). The tests point it at a stand-in that installs nothing from the network.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
USAGE="usage: setup.sh [--dry_run] TPU_NAME ZONE REPOSITORY [REF]  (--help: what it does)"
DRY_RUN=
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) print_help "$0"; exit 0 ;;
    --dry_run|--dry-run) DRY_RUN=1; shift ;;
    -*) echo "setup.sh: unknown option $1; $USAGE" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -lt 3 ] || [ $# -gt 4 ]; then
  echo "setup.sh: need TPU_NAME, ZONE and REPOSITORY (the git URL to install from); $USAGE" >&2
  exit 2
fi
TPU=$1 ZONE=$2 REPOSITORY=$3 REF=${4:-}
LIBTPU_INDEX=https://storage.googleapis.com/jax-releases/libtpu_releases.html
WORKER_SCRIPT=$(cat <<EOF
set -euo pipefail
UV=$(printf %q "${INVSCALE_UV:-uv}")
if ! command -v "\$UV" >/dev/null; then
  export PATH="\$HOME/.local/bin:\$PATH"
  if ! command -v uv >/dev/null; then
    python3 -m pip install -q --user uv 2>/dev/null \\
      || python3 -m pip install -q --user --break-system-packages uv 2>/dev/null \\
      || curl -LsSf https://astral.sh/uv/install.sh | sh
  fi
  UV=uv
fi
if [ -d invscale-jax/.git ]; then
  git -C invscale-jax fetch -q origin
else
  git clone -q $(printf %q "$REPOSITORY") invscale-jax
fi
cd invscale-jax
REF=$(printf %q "$REF")
git checkout -q "\${REF:-origin/HEAD}"
"\$UV" python install -q 3.11
"\$UV" venv -q --allow-existing --python 3.11 .venv
"\$UV" pip install -q --python .venv/bin/python -c constraints.txt -e '.[tpu]' \\
    --find-links $LIBTPU_INDEX
.venv/bin/invscale --help >/dev/null
INVSCALE_TPU_POD=1 .venv/bin/python -c '
from invscale_jax.engine import multihost
multihost.join()
import jax
print(f"invscale-jax ready on worker {jax.process_index()} of {jax.process_count()}: "
      f"jax {jax.__version__}, {jax.local_device_count()} of {jax.device_count()} devices")'
EOF
)
on_every_worker "$TPU" "$ZONE" "$WORKER_SCRIPT"
