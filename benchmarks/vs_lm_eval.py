"""Against lm-evaluation-harness: one model, the same rows, both tools, in one run.

Builds a randomly initialised GPT-NeoX with Pythia-70M's shape (50,304-row vocabulary,
untied embeddings) and a byte-level BPE tokenizer trained on the task texts (nothing is
downloaded), saves it as a Hugging Face directory, converts it with
`invscale convert hf-gpt-neox`, and scores the first rows of each real task file with
- invscale: `invscale score`, float32, the model's BOS convention (GPT-NeoX: none) and
  `--tokenization joint`: prompt + class tokenized as one string, as lm-eval does;
- lm-eval: its Hugging Face backend, float32, CPU, on a task YAML reading the same JSONL
  file: multiple choice with the prompt as context and each class, as written (no target
  delimiter), as the continuation, scored by its summed log-likelihood, as the prize
  defines it (no length normalisation).
Each tool runs as a child process (lm-eval through `lm_eval_scores.py`). Every class
log-probability must agree within --tolerance. Prints, per tool, the whole-process wall
time, the peak memory (max RSS of the child and its descendants, from wait4) and the
scoring phase (invscale: the seconds its COMPLETE marker records, compilation included;
lm-eval: its loglikelihood call, batch-size detection included), then the lm-eval /
invscale ratios against the targets. With several --lm_eval_batch_sizes, lm-eval's
fastest is compared. Skips (exit 0, one line) when lm-eval is not installed.

  pip install -c constraints.txt -e '.[hf,bench]'
  python benchmarks/vs_lm_eval.py --data_dir ../shared/data/inverse_scaling
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
LM_EVAL_CHILD = pathlib.Path(__file__).resolve().parent / "lm_eval_scores.py"
# Pythia-70M's shape (transformers' GPTNeoXConfig fields).
PYTHIA_70M = dict(vocab_size=50304, hidden_size=512, num_hidden_layers=6,
                  num_attention_heads=8, intermediate_size=2048, rotary_pct=0.25,
                  max_position_embeddings=2048, use_parallel_residual=True,
                  tie_word_embeddings=False)
EOS = "<|endoftext|>"
# Targets: lm-eval's wall time / invscale's, at least; and lm-eval's peak memory / invscale's.
WALL_TARGETS = {"memo-trap": 2.5, "hindsight-neglect": 2.0}
MEMORY_TARGET = 5.0

Scores = dict[tuple[int, int], float]  # (example id, class index) -> log p(class | prompt)


@dataclasses.dataclass(frozen=True)
class Measured:
  wall_s: float
  peak_bytes: int


@dataclasses.dataclass(frozen=True)
class ToolRun:
  measured: Measured
  scoring_s: float
  scores: Scores


# ---------------------------------------------------------------------------- inputs


def lm_eval_missing() -> str | None:
  """Why lm-eval cannot be run from this interpreter (None when it can)."""
  if importlib.util.find_spec("lm_eval") is None:
    return (f"lm-eval is not installed for {sys.executable} "
            f"(pip install -c constraints.txt -e '.[hf,bench]')")
  return None


def parse_rows(text: str) -> dict[str, int]:
  """'task=N,...' -> {task: N} (0: every row)."""
  rows = {}
  for item in filter(None, text.split(",")):
    task, _, n = item.partition("=")
    if not n.isdigit():
      raise ValueError(f"--rows: expected TASK=N, got {item!r}")
    rows[task] = int(n)
  return rows


def write_rows(src: pathlib.Path, n: int, out: pathlib.Path) -> int:
  """Copies the first `n` rows (0: all) of JSONL file `src` to `out`; returns the count."""
  lines = [line for line in src.read_text(encoding="utf-8").splitlines(keepends=True)
           if line.strip()]
  lines = lines[:n] if n else lines
  out.write_text("".join(lines), encoding="utf-8")
  return len(lines)


def task_yaml(name: str, data_file: pathlib.Path) -> str:
  """An lm-eval task reading a release JSONL file: log p(class | prompt) for each class,
  the prompt as context, the class string as the continuation (no delimiter)."""
  quote = json.dumps  # a JSON string is a YAML string
  return "\n".join([
      f"task: {name}",
      "dataset_path: json",
      "dataset_kwargs:",
      "  data_files:",
      f"    test: {quote(str(data_file))}",
      "test_split: test",
      "output_type: multiple_choice",
      "doc_to_text: prompt",
      # `classes` holds a Python list literal; lm-eval literal_evals a rendered template.
      f"doc_to_choice: {quote('{{classes}}')}",
      "doc_to_target: answer_index",
      f"target_delimiter: {quote('')}",
      "metric_list:",
      "  - metric: acc",
      ""])


def train_tokenizer(texts: list[str], vocab_size: int, out: pathlib.Path) -> None:
  """A byte-level BPE trained on `texts`, its vocabulary padded with unreachable entries to
  `vocab_size`, saved as a transformers tokenizer (as Pythia's: EOS = BOS = id 0, and
  encoding adds no special token)."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = tokenizers.decoders.ByteLevel()
  tokenizer.train_from_iterator(texts, tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
  spec = json.loads(tokenizer.to_str())
  vocab = spec["model"]["vocab"]
  vocab.update({f"<|unused_{i}|>": i for i in range(len(vocab), vocab_size)})
  transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizers.Tokenizer.from_str(json.dumps(spec)), bos_token=EOS,
      eos_token=EOS, unk_token=EOS).save_pretrained(out)


def build_model(out: pathlib.Path, seed: int = 0) -> int:
  """Saves a random Pythia-70M-shaped GPT-NeoX (weights ~ N(0, 1/fan_in), so the classes'
  scores differ); returns its parameter count."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  model = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**PYTHIA_70M)).eval()
  with torch.no_grad():
    for p in model.parameters():
      if p.dim() > 1:
        p.normal_(0.0, p.shape[-1] ** -0.5)
  transformers.utils.logging.disable_progress_bar()
  model.save_pretrained(out)
  return model.num_parameters()


# ---------------------------------------------------------------------------- running


def child_env(work: pathlib.Path) -> dict[str, str]:
  """The environment of a measured child: offline, CPU, this checkout first on the path,
  and fresh caches under `work` (every run starts cold)."""
  env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
             TRANSFORMERS_OFFLINE="1", HF_HOME=str(work / "hf_home"),
             INVSCALE_CACHE_DIR=str(work / "invscale_cache"), JAX_PLATFORMS="cpu",
             TF_CPP_MIN_LOG_LEVEL="3")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
  return env


def run_measured(cmd: list[str], env: dict[str, str], log: pathlib.Path) -> Measured:
  """Runs `cmd` (output to `log`); its wall time and peak RSS (the largest of the process
  and its waited-for descendants). A failure raises with the log's last lines."""
  start = time.perf_counter()
  with open(log, "wb") as out:
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
  wall = time.perf_counter() - start
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode != 0:
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
    raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... exited {proc.returncode} "
                       f"(log: {log}):\n" + "\n".join(tail))
  return Measured(wall, usage.ru_maxrss * 1024)  # Linux reports kilobytes


def invscale_cli(*args: object) -> list[str]:
  return [sys.executable, "-m", "invscale_jax.cli", *map(str, args)]


def convert(hf_dir: pathlib.Path, out: pathlib.Path, work: pathlib.Path) -> Measured:
  return run_measured(invscale_cli("convert", "hf-gpt-neox", "--src", hf_dir, "--out", out),
                      child_env(work), work / "convert.log")


def invscale_scores(results_dir: pathlib.Path) -> tuple[Scores, float]:
  """The class scores of the one run in `results_dir` and its scoring seconds."""
  from invscale_jax import results  # pylint: disable=g-import-not-at-top

  [run_dir] = results.run_dirs(results_dir)
  scores = {(r.example_id, r.class_index): r.logprob for r in results.read_records(run_dir)}
  return scores, float(results.completion_stats(run_dir)["seconds"])


def run_invscale(manifest: pathlib.Path, task: str, data_dir: pathlib.Path,
                 work: pathlib.Path) -> ToolRun:
  results_dir = work / "results"
  measured = run_measured(
      invscale_cli("score", "--family", manifest, "--tasks", task, "--data_dir", data_dir,
                   "--out", results_dir, "--dtype", "float32", "--tokenization", "joint",
                   "--quiet"),
      child_env(work), work / "invscale.log")
  scores, scoring_s = invscale_scores(results_dir)
  return ToolRun(measured, scoring_s, scores)


def lm_eval_scores(output: dict) -> Scores:
  """Class scores from `lm_eval_scores.py`'s JSON ({doc_id: [log-likelihood per choice]})."""
  return {(int(doc), i): float(lp) for doc, lps in output["scores"].items()
          for i, lp in enumerate(lps)}


def run_lm_eval(hf_dir: pathlib.Path, include_path: pathlib.Path, task_name: str,
                batch_size: str, work: pathlib.Path) -> ToolRun:
  out = work / "lm_eval.json"
  measured = run_measured(
      [sys.executable, str(LM_EVAL_CHILD), "--model", str(hf_dir), "--include_path",
       str(include_path), "--task", task_name, "--batch_size", batch_size, "--out", str(out)],
      child_env(work), work / "lm_eval.log")
  output = json.loads(out.read_text(encoding="utf-8"))
  return ToolRun(measured, output["seconds"]["scoring"], lm_eval_scores(output))


# ---------------------------------------------------------------------------- comparing


def max_difference(a: Scores, b: Scores) -> float:
  """The largest |a - b| over the (example, class) pairs, which must be the same."""
  if a.keys() != b.keys():
    raise ValueError(f"different (example, class) pairs: {len(a.keys() - b.keys())} only "
                     f"in the first, {len(b.keys() - a.keys())} only in the second")
  return max(abs(a[k] - b[k]) for k in a)


def median_run(runs: list[ToolRun]) -> ToolRun:
  """The medians of repeated runs' times and peaks (the scores of the first)."""
  return ToolRun(Measured(statistics.median(r.measured.wall_s for r in runs),
                          int(statistics.median(r.measured.peak_bytes for r in runs))),
                 statistics.median(r.scoring_s for r in runs), runs[0].scores)


def verdict(ratio: float, target: float | None) -> str:
  if target is None:
    return f"{ratio:.2f}x"
  return f"{ratio:.2f}x (target >= {target:g}x: {'met' if ratio >= target else 'NOT met'})"


def tool_line(name: str, run: ToolRun) -> str:
  m = run.measured
  return (f"  {name:18s} wall {m.wall_s:7.1f} s  peak {m.peak_bytes / 2**30:6.2f} GiB  "
          f"scoring {run.scoring_s:7.1f} s  rest {m.wall_s - run.scoring_s:6.1f} s")


def report(task: str, n_rows: int, invscale: ToolRun, lm_eval: dict[str, ToolRun],
           worst: float, tolerance: float) -> bool:
  """Prints a task's comparison; returns whether the scores agreed."""
  agreed = worst <= tolerance
  print(f"\n{task}: {n_rows} examples, {len(invscale.scores)} classes; scores "
        f"{'agree' if agreed else 'DISAGREE'}: max |diff| {worst:.1e} (tolerance {tolerance:g})")
  print(tool_line("invscale", invscale))
  for batch_size, run in lm_eval.items():
    print(tool_line(f"lm-eval (batch {batch_size})", run))
  best = min(lm_eval, key=lambda b: lm_eval[b].measured.wall_s)
  peer = lm_eval[best]
  print(f"  lm-eval (batch {best}) / invscale: wall "
        f"{verdict(peer.measured.wall_s / invscale.measured.wall_s, WALL_TARGETS.get(task))}, "
        f"scoring {peer.scoring_s / invscale.scoring_s:.2f}x, peak memory "
        f"{verdict(peer.measured.peak_bytes / invscale.measured.peak_bytes, MEMORY_TARGET)}")
  return agreed


# ---------------------------------------------------------------------------- main


def prepare(args: argparse.Namespace, work: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """The model (Hugging Face dir, converted manifest), built from the tasks' texts."""
  from invscale_jax.data import datadir  # pylint: disable=g-import-not-at-top

  texts = [e.prompt + c for task in args.tasks
           for e in datadir.load_task(args.data_dir, task) for c in e.classes]
  hf_dir, converted = work / "hf_model", work / "converted"
  train_tokenizer(texts, PYTHIA_70M["vocab_size"], hf_dir)
  n_params = build_model(hf_dir)
  took = convert(hf_dir, converted, work)
  print(f"model: random GPT-NeoX, Pythia-70M shape, {n_params:,} parameters, float32; "
        f"converted in {took.wall_s:.1f} s")
  return hf_dir, converted / "manifest.json"


def compare_task(args: argparse.Namespace, task: str, hf_dir: pathlib.Path,
                 manifest: pathlib.Path, work: pathlib.Path) -> bool:
  """Scores `task`'s rows with both tools, interleaved --repeats times; prints the result."""
  from invscale_jax import catalog  # pylint: disable=g-import-not-at-top

  filename = catalog.get(task).filename
  data_dir, include = work / task / "data", work / task / "lm_eval_tasks"
  data_dir.mkdir(parents=True)
  include.mkdir()
  n_rows = write_rows(args.data_dir / filename, args.rows.get(task, 0), data_dir / filename)
  task_name = "invscale_" + task.replace("-", "_")
  (include / f"{task_name}.yaml").write_text(task_yaml(task_name, data_dir / filename), "utf-8")

  def fresh(name: str) -> pathlib.Path:  # one directory per run: nothing is resumed
    return pathlib.Path(tempfile.mkdtemp(prefix=name + "-", dir=work / task))

  runners = {"invscale": lambda: run_invscale(manifest, task, data_dir, fresh("invscale"))}
  for b in args.lm_eval_batch_sizes:
    runners[b] = lambda b=b: run_lm_eval(hf_dir, include, task_name, b, fresh(f"lm_eval_{b}"))
  runs: dict[str, list[ToolRun]] = {name: [] for name in runners}
  for repeat in range(args.repeats):
    for name in (list(runners) if repeat % 2 == 0 else list(runners)[::-1]):
      runs[name].append(runners[name]())
  worst = max(max_difference(runs["invscale"][0].scores, r.scores)
              for name in runs for r in runs[name])
  medians = {name: median_run(r) for name, r in runs.items()}
  invscale = medians.pop("invscale")
  return report(task, n_rows, invscale, medians, worst, args.tolerance)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", type=pathlib.Path,
                      default=REPO.parent / "shared" / "data" / "inverse_scaling")
  parser.add_argument("--tasks", default="memo-trap,hindsight-neglect")
  parser.add_argument("--rows", default="hindsight-neglect=64",
                      help="TASK=N,...: the first N rows of a task (default: every row)")
  parser.add_argument("--lm_eval_batch_sizes", default="32",
                      help="comma-separated (integers or 'auto'); the fastest is compared")
  parser.add_argument("--repeats", type=int, default=1,
                      help="interleaved runs of each tool; medians are compared")
  parser.add_argument("--tolerance", type=float, default=1e-4)
  parser.add_argument("--work_dir", type=pathlib.Path,
                      help="keep models, logs and results here (default: a temporary "
                           "directory, removed unless something fails)")
  args = parser.parse_args()
  missing = lm_eval_missing()
  if missing:
    print(f"skipped: {missing}")
    return 0
  args.tasks = args.tasks.split(",")
  args.rows = parse_rows(args.rows)
  args.lm_eval_batch_sizes = args.lm_eval_batch_sizes.split(",")
  work = args.work_dir or pathlib.Path(tempfile.mkdtemp(prefix="vs_lm_eval-"))
  work.mkdir(parents=True, exist_ok=True)
  print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; work dir {work}")
  try:
    hf_dir, manifest = prepare(args, work)
    agreed = all([compare_task(args, task, hf_dir, manifest, work) for task in args.tasks])
  except (RuntimeError, ValueError) as e:
    print(f"error: {e}\n(work dir kept: {work})", file=sys.stderr)
    return 1
  if args.work_dir is None and agreed:
    shutil.rmtree(work)
  return 0 if agreed else 1


if __name__ == "__main__":
  sys.exit(main())
