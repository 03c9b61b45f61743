"""tpu_scripts/setup.sh and score_pod.sh as a user first meets them: --help, --dry_run, and
a pod run that outlives the SSH session (the pod itself: test_tpu_scripts.py)."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time

import pytest

from conftest import REPO
from test_tpu_scripts import TPU, ZONE, pod, run  # pylint: disable=unused-import  (fixture)


@pytest.mark.parametrize("script", ["setup.sh", "score_pod.sh"])
def test_scripts_have_help_and_a_dry_run(pod: dict[str, str], script: str) -> None:
  path = str(REPO / "tpu_scripts" / script)
  shown = run(pod, path, "--help")
  assert shown.returncode == 0 and shown.stderr == ""
  assert f"tpu_scripts/{script} [--dry_run]" in shown.stdout and "Network:" in shown.stdout
  log = pathlib.Path(pod["FAKE_GCLOUD_LOG"])
  before = log.read_text() if log.exists() else ""
  argv = ("https://example.com/invscale-jax.git",) if script == "setup.sh" else (
      "--", "--family", "gs://b/fam/manifest.json", "--out", "gs://b/results")
  dry = run(pod, path, "--dry_run", TPU, ZONE, *argv)
  assert dry.returncode == 0, dry.stderr
  assert dry.stdout.startswith(f"dry run: would run on every worker of {TPU}")
  assert f"gcloud compute tpus tpu-vm ssh {TPU} --zone {ZONE} --worker=all" in dry.stdout
  assert (log.read_text() if log.exists() else "") == before  # gcloud was not called


def test_a_pod_run_survives_the_ssh_session(pod: dict[str, str], tmp_path) -> None:
  """The worker command, as score_pod.sh sends it, run in a session that then hangs up: the
  run goes on, and leaves its output and exit status in the worker's log."""
  env = dict(pod, INVSCALE_RUN_ID="hup")
  dry = run(env, str(REPO / "tpu_scripts" / "score_pod.sh"), "--dry_run", TPU, ZONE, "--",
            "--family", "it's mine")
  worker_script = dry.stdout.split("with WORKER_SCRIPT:\n", 1)[1]
  fake = tmp_path / "invscale-jax" / ".venv" / "bin" / "invscale"
  fake.parent.mkdir(parents=True)
  fake.write_text('#!/bin/bash\nsleep 2; echo "scored: $*"; exit 3\n')
  fake.chmod(0o755)
  session = subprocess.Popen(["bash", "-c", worker_script], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
  time.sleep(1)
  os.killpg(session.pid, signal.SIGHUP)  # the SSH connection drops
  session.wait(10)
  exit_file = tmp_path / "invscale-jax" / "logs" / "score-hup.exit"
  for _ in range(100):
    if exit_file.exists():
      break
    time.sleep(0.1)
  assert exit_file.read_text() == "3\n"
  log = (tmp_path / "invscale-jax" / "logs" / "score-hup.log").read_text()
  assert log == "scored: score --family it's mine\n"
