"""tpu_scripts/setup.sh, score_pod.sh and t5x_infer_pod.sh, run as a user runs them,
against a pod of local workers.

A stand-in `gcloud` on PATH runs `compute tpus tpu-vm ssh NAME --zone Z --worker=all
--command CMD` as it would on each worker: CMD in bash, in the worker's home directory
(one per worker), all workers at once, joined into one jax.distributed job on 127.0.0.1
(INVSCALE_COORDINATOR / INVSCALE_NUM_PROCESSES / INVSCALE_PROCESS_ID stand for what
`jax.distributed.initialize()` finds by itself on a TPU pod). setup.sh clones a snapshot
of this working tree; a stand-in `uv` (INVSCALE_UV) makes the venv from this Python and
its installed packages instead of downloading them, and installs the clone with pip
(editable, offline). score_pod.sh then scores from and into a bucket on the GCS emulator.
"""

from __future__ import annotations

import ast
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import sysconfig

import pytest

from conftest import (REPO, assert_same_records, bucket_results, read_results, select,
                      without_run_keys)
from invscale_jax import results, storage

WORKERS = 2
TPU, ZONE = "my-tpu", "us-central2-b"

GCLOUD = """\
#!{python}
import os, socket, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
  log.write(repr(args) + "\\n")
assert args[:5] == ["compute", "tpus", "tpu-vm", "ssh", {tpu!r}], args
assert args[5:7] == ["--zone", {zone!r}] and args[7] in ("--worker=all", "--worker=0"), args
assert args[8] == "--command" and len(args) == 10, args
with socket.socket() as s:
  s.bind(("127.0.0.1", 0))
  port = s.getsockname()[1]
env = {{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}}
jobs = []
for i in range({workers} if args[7] == "--worker=all" else 1):
  home = os.path.join(os.environ["FAKE_TPU_ROOT"], f"worker-{{i}}")
  os.makedirs(home, exist_ok=True)
  jobs.append(subprocess.Popen(["bash", "-c", args[9]], cwd=home, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=dict(
      env, HOME=home, INVSCALE_COORDINATOR=f"127.0.0.1:{{port}}",
      INVSCALE_NUM_PROCESSES=str({workers}), INVSCALE_PROCESS_ID=str(i))))
codes = []
for i, job in enumerate(jobs):
  out = job.communicate()[0]
  sys.stdout.write("".join(f"worker-{{i}}: {{line}}\\n" for line in out.splitlines()))
  codes.append(job.returncode)
sys.exit(max(codes))
"""

UV = """\
#!{python}
# Stand-in for uv: this Python and its packages instead of downloads.
import os, subprocess, sys
args = [a for a in sys.argv[1:] if a not in ("-q", "--allow-existing")]
with open(os.environ["FAKE_UV_LOG"], "a") as log:
  log.write(repr(args) + "\\n")
if args[:2] == ["python", "install"]:
  assert args[2:] == ["3.11"], args
elif args[0] == "venv":
  assert args[1:3] == ["--python", "3.11"], args
  subprocess.run([{python!r}, "-m", "venv", "--without-pip", args[3]], check=True)
  site = subprocess.run([os.path.join(args[3], "bin", "python"), "-c",
                         "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        check=True, capture_output=True, text=True).stdout.strip()
  with open(os.path.join(site, "_test_packages.pth"), "w") as f:
    f.write({packages!r} + "\\n")
elif args[:2] == ["pip", "install"]:
  python = args[args.index("--python") + 1]
  assert args[args.index("-c") + 1] == "constraints.txt" and os.path.isfile("constraints.txt")
  assert args[args.index("-e") + 1] == ".[tpu]", args
  subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                  "--no-build-isolation", "-e", "."], check=True)
else:
  sys.exit(f"stand-in uv: unexpected {{args}}")
"""

# Stand-in for `python -m t5x.infer` (T5X_PYTHON): checks the command line the script
# builds, and on worker 0 (T5X's host 0, the one that writes) writes the score output of
# the task as T5X does (tests/t5x_outputs.py), with the fields score_invscale.gin asks
# for and a unigram model's scores.
T5X_INFER = """\
#!{python}
import ast, os, re, sys
args = sys.argv[1:]
with open(os.environ["FAKE_T5X_LOG"], "a") as log:
  log.write(repr(args) + "\\n")
assert args[:2] == ["-m", "t5x.infer"], args
flags = [a.split("=", 1) for a in args[2:]]
gin_files = [v for k, v in flags if k == "--gin_file"]
bindings = {{k[len("--gin."):]: ast.literal_eval(v) for k, v in flags if k.startswith("--gin.")}}
assert [v for k, v in flags if k == "--gin_search_paths"] == [os.getcwd()], flags
assert os.path.isfile(gin_files[0]) and os.path.isfile(gin_files[1]), gin_files
assert gin_files[2].endswith("invscale-jax/gin/t5x/score_invscale.gin"), gin_files
if os.environ["INVSCALE_PROCESS_ID"] == "0":
  sys.path.insert(0, os.path.join(os.environ["HOME"], "invscale-jax", "tests"))
  import gin, numpy as np, seqio
  import seqio_tasks, t5x_outputs
  from seqio_tasks import lengths
  gin.parse_config(f"INVSCALE_DATA_DIR = {{bindings['INVSCALE_DATA_DIR']!r}}")
  fields = ast.literal_eval(re.search(r"input_fields_to_include = (\\[.*?\\])",
                                      open(gin_files[2]).read(), re.S).group(1))
  task = seqio.get_mixture_or_task(bindings["MIXTURE_OR_TASK_NAME"])
  t5x_outputs.infer_task(
      task, bindings["INFER_OUTPUT_DIR"], lengths.max_lengths(task),
      lambda rows: [float(np.log((r["targets"] % 7 + 1) / 28.0).sum()) for r in rows],
      lambda *a: t5x_outputs.write_inferences_to_file(*a, input_fields_to_include=fields))
"""


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory, gcs) -> dict[str, str]:
  """The environment of the tpu_scripts commands: stand-in gcloud and uv, empty workers,
  gs:// URLs reaching the emulator."""
  del gcs  # only for the environment it sets
  if shutil.which("git") is None:
    pytest.skip("git is needed to clone the repository onto the workers")
  root = tmp_path_factory.mktemp("pod")
  bin_dir = root / "bin"
  bin_dir.mkdir()
  fill = dict(python=sys.executable, tpu=TPU, zone=ZONE, workers=WORKERS,
              packages=sysconfig.get_paths()["purelib"])
  for name, text in (("gcloud", GCLOUD), ("uv", UV), ("t5x-python", T5X_INFER)):
    (bin_dir / name).write_text(text.format(**fill))
    (bin_dir / name).chmod(0o755)
  env = {k: v for k, v in os.environ.items() if not k.startswith("INVSCALE_")}
  env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", INVSCALE_UV=str(bin_dir / "uv"),
             FAKE_TPU_ROOT=str(root / "workers"), FAKE_GCLOUD_LOG=str(root / "gcloud.log"),
             FAKE_UV_LOG=str(root / "uv.log"), FAKE_T5X_LOG=str(root / "t5x.log"),
             T5X_PYTHON=str(bin_dir / "t5x-python"), JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return env


def snapshot(target: pathlib.Path) -> str:
  """A git repository holding this working tree's files (committed or not): what the
  workers clone."""
  listed = subprocess.run(["git", "-C", REPO, "ls-files", "-co", "--exclude-standard", "-z"],
                          check=True, capture_output=True, text=True).stdout.split("\0")
  for name in filter(None, listed):
    if (REPO / name).is_file() and not (REPO / name).is_symlink():
      (target / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(REPO / name, target / name)
  git = ["git", "-C", str(target), "-c", "user.name=test", "-c", "user.email=test@localhost"]
  for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
    subprocess.run(git + command, check=True)
  return str(target)


def run(env: dict[str, str], *argv: str, timeout: float = 400) -> subprocess.CompletedProcess:
  return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                        check=False)


@pytest.fixture(scope="module")
def installed(pod: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
  """setup.sh has installed the snapshot on every worker."""
  source = snapshot(tmp_path_factory.mktemp("source"))
  result = run(pod, str(REPO / "tpu_scripts" / "setup.sh"), TPU, ZONE, source)
  assert result.returncode == 0, result.stdout + result.stderr
  pod = dict(pod, SETUP_OUTPUT=result.stdout)
  return pod


def test_setup_installs_and_checks_every_worker(installed: dict[str, str]) -> None:
  lines = installed["SETUP_OUTPUT"].splitlines()
  for i in range(WORKERS):
    assert (f"worker-{i}: invscale-jax ready on worker {i} of {WORKERS}: jax "
            in "\n".join(lines)), lines
    assert any(line.startswith(f"worker-{i}: ") and line.endswith(
        f"1 of {WORKERS} devices") for line in lines), lines
    checkout = pathlib.Path(installed["FAKE_TPU_ROOT"], f"worker-{i}", "invscale-jax")
    assert (checkout / "invscale_jax" / "storage.py").is_file()
    assert os.access(checkout / ".venv" / "bin" / "invscale", os.X_OK)
  uv_calls = pathlib.Path(installed["FAKE_UV_LOG"]).read_text().splitlines()
  assert len(uv_calls) == 3 * WORKERS  # python install, venv, pip install on each worker


def test_setup_needs_a_repository(pod: dict[str, str]) -> None:
  log = pathlib.Path(pod["FAKE_GCLOUD_LOG"])
  before = log.read_text() if log.exists() else ""
  result = run(pod, str(REPO / "tpu_scripts" / "setup.sh"), TPU, ZONE)
  assert result.returncode != 0 and "REPOSITORY" in result.stderr
  assert (log.read_text() if log.exists() else "") == before  # no worker was touched


def test_score_pod_scores_from_and_into_a_bucket(installed: dict[str, str], family_in_bucket,
                                                 reference_results: pathlib.Path) -> None:
  out = f"{family_in_bucket.url}/pod-results"
  argv = ("--family", family_in_bucket.manifest, "--model", "tiny-1", "--tasks", "memo-trap",
          "--variants", "zero_shot", "--data_dir", family_in_bucket.data, "--out", out,
          "--chunk_size", "8", "--tokens_per_batch", "1024")
  env = dict(installed, INVSCALE_RUN_ID="pod-test")
  result = run(env, str(REPO / "tpu_scripts" / "score_pod.sh"), TPU, ZONE, "--", *argv)
  assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
  calls = pathlib.Path(installed["FAKE_GCLOUD_LOG"]).read_text().splitlines()
  command = ast.literal_eval(calls[-1])[-1]
  assert shlex.join(("score", *argv)) in command.replace("\\", "")  # gs:// URLs unchanged
  for i in range(WORKERS):  # each worker ran it detached from the session, with a log
    logs = pathlib.Path(installed["FAKE_TPU_ROOT"], f"worker-{i}", "invscale-jax", "logs")
    assert (logs / "score-pod-test.exit").read_text() == "0\n"
    assert (logs / "score-pod-test.log").is_file()
    assert f"worker-{i}: started invscale score on " in result.stdout
  (run_dir,) = results.run_dirs(out)
  assert results.is_complete(run_dir)
  assert len(results.chunk_names(run_dir)) == 3  # 24 examples by 8, written once, by host 0
  assert results.LEASE not in storage.children(run_dir)
  expected = select(read_results(reference_results), ("tiny-1",), ("memo-trap",), ("zero_shot",))
  assert_same_records(without_run_keys(bucket_results(out)), without_run_keys(expected), 1e-5)


def test_t5x_infer_pod_runs_t5x_then_imports_and_reports(installed, tiny_family, small_data_dir,
                                                         tmp_path) -> None:
  """T5X infer (a stand-in) for every model and task on every worker, then import and report
  on worker 0; a re-run skips what T5X has written."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from invscale_jax.data import datadir  # pylint: disable=g-import-not-at-top
  t5x_dir = tmp_path / "t5x"
  (t5x_dir / "t5x" / "configs" / "runs").mkdir(parents=True)
  (t5x_dir / "t5x" / "configs" / "runs" / "infer.gin").write_text("# T5X's\n")
  model_gin = tmp_path / "model.gin"
  model_gin.write_text("# the model's T5X gin file\n")
  models = tmp_path / "models.txt"
  fam = tiny_family.parent
  models.write_text(f"# name checkpoint gin\ntiny-1 {fam}/tiny-1/checkpoint_0 {model_gin}\n"
                    f"tiny-2  {fam}/tiny-2   {model_gin}  # a model dir: its latest\n")
  infer_dir, out, report = tmp_path / "infer", tmp_path / "results", tmp_path / "report"
  argv = [str(REPO / "tpu_scripts" / "t5x_infer_pod.sh"), TPU, ZONE, "--models", str(models),
          "--family", str(tiny_family), "--infer_dir", str(infer_dir), "--out", str(out),
          "--tasks", "memo-trap"]
  t5x_flags = ["--", f"--gin.INVSCALE_DATA_DIR='{small_data_dir}'"]
  env = dict(installed, T5X_DIR=str(t5x_dir))
  result = run(env, *argv, "--report", str(report), *t5x_flags)
  assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
  log = pathlib.Path(installed["FAKE_T5X_LOG"])
  calls = [ast.literal_eval(line) for line in log.read_text().splitlines()]
  assert len(calls) == 2 * WORKERS
  modes = sorted(next(a for a in c if "RestoreCheckpointConfig.mode" in a) for c in calls)
  assert modes == ["--gin.utils.RestoreCheckpointConfig.mode='latest'"] * WORKERS + [
      "--gin.utils.RestoreCheckpointConfig.mode='specific'"] * WORKERS
  recs = read_results(out)
  examples = datadir.load_task(small_data_dir, "memo-trap")
  assert len(recs) == 2 * sum(len(e.classes) for e in examples)
  for (model, _, variant, example, _, index), r in recs.items():
    target = np.frombuffer(examples[example].classes[index].encode(), np.uint8) + 3
    assert r.logprob == pytest.approx(float(np.log((target % 7 + 1) / 28.0).sum()))
    assert model in ("tiny-1", "tiny-2") and variant == "zero_shot"
  assert (report / "metrics.csv").is_file()
  before = log.read_text()
  result = run(env, *argv, *t5x_flags)
  assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
  assert log.read_text() == before  # T5X was not run again
  assert result.stdout.count("already written") == 2 * WORKERS
  assert result.stdout.count("already imported") == 2


def test_t5x_infer_pod_help_and_bad_models_file(tmp_path) -> None:
  script = str(REPO / "tpu_scripts" / "t5x_infer_pod.sh")
  result = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
  assert result.returncode == 0 and "$T5X_PYTHON -m t5x.infer" in result.stdout
  models = tmp_path / "models.txt"
  models.write_text("tiny-1 /ckpt/checkpoint_0 model.gin\ntiny-2 /ckpt\n")
  result = subprocess.run([script, TPU, ZONE, "--models", str(models), "--family", "f.json",
                           "--infer_dir", "d", "--out", "o"], capture_output=True, text=True,
                          check=False, env={"PATH": "/usr/bin:/bin"})
  assert result.returncode == 2
  assert result.stderr.strip() == (f"t5x_infer_pod.sh: {models}:2: expected NAME CHECKPOINT "
                                   f"GIN_FILE, got 2 fields")
