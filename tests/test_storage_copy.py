"""`invscale storage cp`: folders to and from a bucket, byte for byte, with nothing but our
own line on the terminal (no credential-provider log line)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, RunCli


def _tree(root) -> dict[str, bytes]:
  return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
          for d, _, files in os.walk(root) for f in files}


def test_a_folder_goes_to_a_bucket_and_back_quietly(bucket: str, tmp_path,
                                                    run_cli: RunCli) -> None:
  src = tmp_path / "report"
  (src / "plots").mkdir(parents=True)
  (src / "report.html").write_text("<html>ü</html>", encoding="utf-8")
  (src / "plots" / "curves.png").write_bytes(bytes(range(256)) * 40)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get(
      "PYTHONPATH", "")]))
  # A fresh process: tensorstore's credential provider logs on a process's first request.
  done = subprocess.run([sys.executable, "-m", "invscale_jax.cli", "storage", "cp", str(src),
                         f"{bucket}/report"], capture_output=True, text=True, env=env,
                        timeout=60, check=False)
  assert done.returncode == 0, done.stderr
  assert (done.stdout, done.stderr) == (f"copied 2 files (0.0 MB) to {bucket}/report\n", "")
  back = tmp_path / "back"
  assert run_cli("storage", "cp", f"{bucket}/report", back).code == 0
  assert _tree(back) == _tree(src)
  assert run_cli("storage", "cp", f"{bucket}/report/report.html", tmp_path / "r.html").code == 0
  assert (tmp_path / "r.html").read_text(encoding="utf-8") == "<html>ü</html>"
  missing = run_cli("storage", "cp", f"{bucket}/nothing", tmp_path / "x")
  assert missing.code == 2 and missing.err == (
      f"invscale: error: {bucket}/nothing: no such file or directory (or an empty one)\n")
