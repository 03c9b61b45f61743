"""`make demo` installs only what the demo needs; `make test` adds the test extras (which
hold everything the tests import)."""

from __future__ import annotations

import ast
import shutil
import subprocess

import pytest

from conftest import REPO


def _extras() -> dict[str, list[str]]:
  tree = ast.parse((REPO / "setup.py").read_text())
  call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
              and getattr(n.func, "attr", "") == "setup")
  return {k.arg: ast.literal_eval(k.value) for k in call.keywords
          if k.arg in ("install_requires", "extras_require")}


def _installs(target: str, venv) -> list[str]:
  dry = subprocess.run(["make", "-n", "-C", str(REPO), target, f"VENV={venv}"],
                       capture_output=True, text=True, check=True, timeout=30).stdout
  return [line for line in dry.splitlines() if " pip install " in line and "-e " in line]


def test_demo_installs_no_torch_and_test_installs_the_test_extras(tmp_path) -> None:
  if shutil.which("make") is None:
    pytest.skip("make is not installed")
  venv = tmp_path / "venv"  # absent: make plans the whole set-up
  (demo,) = _installs("demo", venv)
  assert demo.endswith("-e .")  # the package alone, no extra
  (test,) = _installs("test", venv)
  assert test.endswith("-e '.[test]'")
  fields = _extras()
  base = " ".join(fields["install_requires"])
  assert "torch" not in base and "transformers" not in base
  assert {"pytest", "gcp-storage-emulator", "torch", "transformers", "safetensors"} <= set(
      fields["extras_require"]["test"])
