"""Fixed costs: a re-run of complete runs loads none of the heavy libraries, and compiled
executables are kept in a persistent cache (on by default, can be switched off)."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import SCORE_ARGS, ScoreCli

HEAVY = ("tensorflow", "seqio", "flax", "jax", "orbax", "matplotlib", "torch", "transformers")
# Runs `invscale ARGV...` and prints which heavy libraries were imported.
PROBE = f"""
import sys
from invscale_jax import cli
code = cli.main(sys.argv[1:])
print("IMPORTED", sorted(m for m in {HEAVY!r} if m in sys.modules))
sys.exit(code)
"""


def test_a_rerun_of_complete_runs_imports_no_heavy_library(score_cli: ScoreCli,
                                                           reference_results, tmp_path):
  out = shutil.copytree(reference_results, tmp_path / "results")
  done = subprocess.run([sys.executable, "-c", PROBE, *score_cli.argv(out, *SCORE_ARGS)],
                        env=score_cli.env(), capture_output=True, text=True, timeout=300,
                        check=False)
  assert done.returncode == 0, done.stderr
  assert "IMPORTED []" in done.stdout, done.stdout
  assert "all runs already complete" in done.stderr


def test_compilations_are_cached_unless_switched_off(score_cli: ScoreCli, tmp_path):
  for setting, expect_cache in (("on", True), ("off", False)):
    cache = tmp_path / setting
    env = {k: v for k, v in score_cli.env().items() if not k.startswith("JAX_COMPILATION")}
    env.update(INVSCALE_CACHE_DIR=str(cache), INVSCALE_COMPILATION_CACHE=setting)
    done = subprocess.run(
        [sys.executable, "-m", "invscale_jax.cli",
         *score_cli.argv(tmp_path / f"results_{setting}", "--model", "tiny-1", "--tasks",
                         "neqa", "--variants", "zero_shot", "--quiet")],
        env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    entries = list((cache / "jax_compilation_cache").glob("*"))
    assert bool(entries) == expect_cache, entries


def test_scoring_imports_neither_tensorflow_nor_seqio(score_cli: ScoreCli, tmp_path):
  """Requests are built with the model's own tokenizer: the scoring path loads JAX and
  Flax, never TensorFlow or SeqIO (nor what they pull in)."""
  done = subprocess.run(
      [sys.executable, "-c", PROBE, *score_cli.argv(tmp_path / "out", "--model", "tiny-1",
                                                    "--tasks", "memo-trap", "--limit", "4")],
      env=score_cli.env(), capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr
  imported = done.stdout.split("IMPORTED")[-1]
  assert "'jax'" in imported, imported
  for heavy in ("tensorflow", "seqio", "matplotlib", "torch", "transformers"):
    assert heavy not in imported, imported


def test_the_command_exits_at_once_after_its_exit_handlers_and_output(tmp_path):
  """`invscale` (cli.run) skips Python's slow finalization of JAX and the imported
  modules, but runs the exit handlers, flushes its output and keeps the exit status."""
  probe = ("import atexit, sys\nfrom invscale_jax import cli\n"
           "atexit.register(lambda: print('handler ran', flush=True))\n"
           "sys.argv = ['invscale', *sys.argv[1:]]\ncli.run()\n")
  ok = subprocess.run([sys.executable, "-c", probe, "--version"], capture_output=True,
                      text=True, timeout=120, check=False)
  assert ok.returncode == 0 and ok.stdout.splitlines()[-1] == "handler ran", ok
  assert ok.stdout.startswith("invscale ")
  bad = subprocess.run([sys.executable, "-c", probe, "results", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=120, check=False)
  assert bad.returncode != 0 and "invscale: error:" in bad.stderr, bad
