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
log-probability must agree within --tolerance.

Timing is paired and guarded against other work on the machine: the tools run in turns
(invscale then lm-eval, then the other way round), each run starts only once the other
processes have kept at most --quiet_cores cores busy over a few seconds (waiting up to
--quiet_wait seconds), and the CPU the other processes used during each run is recorded
(/proc/stat's busy time less the child's and this script's own). A pair is quiet when
neither of its runs saw more than --quiet_cores of other work; contended pairs are listed
but left out of the medians. Both cache conditions are measured: cold (every run with
empty caches: invscale's compilation, request and batch-size caches, lm-eval's datasets
cache) and warm (caches filled by one unmeasured run of each tool first). Printed per
task and condition: each pair (wall time, peak memory = max RSS of the child and its
descendants from wait4, scoring phase: invscale's seconds in COMPLETE, compilation
included; lm-eval's loglikelihood call; other processes' cores), then the medians of the
quiet pairs and the lm-eval / invscale ratios against the targets. Skips (exit 0, one
line) when lm-eval is not installed.

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
# Targets (issue 22), on quiet pairs: lm-eval's wall time / invscale's, at least; and
# lm-eval's peak memory / invscale's, at least.
WALL_TARGETS = {"memo-trap": 2.5, "hindsight-neglect": 2.5}
MEMORY_TARGETS = {"memo-trap": 1.0, "hindsight-neglect": 5.0}
# invscale's cold-cache wall time / its warm one, at most (memo-trap).
COLD_TARGETS = {"memo-trap": 1.1}

Scores = dict[tuple[int, int], float]  # (example id, class index) -> log p(class | prompt)
TOOLS = ("invscale", "lm-eval")
CONDITIONS = ("cold", "warm")


@dataclasses.dataclass(frozen=True)
class Measured:
  wall_s: float
  peak_bytes: int
  other_cores: float = 0.0  # cores other processes kept busy during the run, on average


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


# ---------------------------------------------------------------------------- the machine


def busy_seconds() -> float:
  """CPU seconds every process on the machine has been busy since boot (/proc/stat: all
  time but idle and iowait)."""
  with open("/proc/stat", encoding="ascii") as f:
    ticks = [int(x) for x in f.readline().split()[1:9]]
  return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
  """CPU seconds of this process (not its children)."""
  t = os.times()
  return t.user + t.system


def other_cores(seconds: float = 3.0) -> float:
  """Cores the other processes keep busy, measured over `seconds` (the two clocks tick
  at different granularities: a near-idle machine can read a hair below 0, given as 0)."""
  busy, own, start = busy_seconds(), own_seconds(), time.perf_counter()
  time.sleep(seconds)
  return max(0.0, (busy_seconds() - busy - (own_seconds() - own)) / (time.perf_counter() - start))


def wait_quiet(max_cores: float, max_wait: float) -> float:
  """Waits until other processes keep at most `max_cores` cores busy (or `max_wait`
  seconds have passed); returns the last measurement."""
  deadline = time.monotonic() + max_wait
  while True:
    cores = other_cores()
    if cores <= max_cores or time.monotonic() >= deadline:
      return cores
    print(f"  waiting for a quiet machine: other processes use {cores:.2f} cores "
          f"(at most {max_cores:g})", flush=True)
    time.sleep(10)


# ---------------------------------------------------------------------------- running


def child_env(cache: pathlib.Path) -> dict[str, str]:
  """The environment of a measured child: offline, CPU, this checkout first on the path,
  and every cache under `cache` (empty: a cold run)."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE",
                                                                   "INVSCALE_COMPILATION"))}
  env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
             HF_HOME=str(cache / "hf_home"), INVSCALE_CACHE_DIR=str(cache / "invscale_cache"),
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
  return env


def run_measured(cmd: list[str], env: dict[str, str], log: pathlib.Path) -> Measured:
  """Runs `cmd` (output to `log`); its wall time, peak RSS (the largest of the process
  and its waited-for descendants) and the cores other processes used meanwhile. A
  failure raises with the log's last lines."""
  busy, own, start = busy_seconds(), own_seconds(), time.perf_counter()
  with open(log, "wb") as out:
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
  wall = time.perf_counter() - start
  others = (busy_seconds() - busy - (own_seconds() - own)
            - usage.ru_utime - usage.ru_stime) / wall
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode != 0:
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
    raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... exited {proc.returncode} "
                       f"(log: {log}):\n" + "\n".join(tail))
  return Measured(wall, usage.ru_maxrss * 1024, max(0.0, others))  # ru_maxrss: kilobytes


def invscale_cli(*args: object) -> list[str]:
  return [sys.executable, "-m", "invscale_jax.cli", *map(str, args)]


def convert(hf_dir: pathlib.Path, out: pathlib.Path, work: pathlib.Path) -> Measured:
  return run_measured(invscale_cli("convert", "hf-gpt-neox", "--src", hf_dir, "--out", out),
                      child_env(work / "convert_cache"), work / "convert.log")


def invscale_scores(results_dir: pathlib.Path) -> tuple[Scores, float]:
  """The class scores of the one run in `results_dir` and its scoring seconds."""
  from invscale_jax import results  # pylint: disable=g-import-not-at-top

  [run_dir] = results.run_dirs(results_dir)
  scores = {(r.example_id, r.class_index): r.logprob for r in results.read_records(run_dir)}
  return scores, float(results.completion_stats(run_dir)["seconds"])


def run_invscale(manifest: pathlib.Path, task: str, data_dir: pathlib.Path,
                 work: pathlib.Path, cache: pathlib.Path) -> ToolRun:
  results_dir = work / "results"
  measured = run_measured(
      invscale_cli("score", "--family", manifest, "--tasks", task, "--data_dir", data_dir,
                   "--out", results_dir, "--dtype", "float32", "--tokenization", "joint",
                   "--quiet"),
      child_env(cache), work / "invscale.log")
  scores, scoring_s = invscale_scores(results_dir)
  return ToolRun(measured, scoring_s, scores)


def lm_eval_scores(output: dict) -> Scores:
  """Class scores from `lm_eval_scores.py`'s JSON ({doc_id: [log-likelihood per choice]})."""
  return {(int(doc), i): float(lp) for doc, lps in output["scores"].items()
          for i, lp in enumerate(lps)}


def run_lm_eval(hf_dir: pathlib.Path, include_path: pathlib.Path, task_name: str,
                batch_size: str, work: pathlib.Path, cache: pathlib.Path) -> ToolRun:
  out = work / "lm_eval.json"
  measured = run_measured(
      [sys.executable, str(LM_EVAL_CHILD), "--model", str(hf_dir), "--include_path",
       str(include_path), "--task", task_name, "--batch_size", batch_size, "--out", str(out)],
      child_env(cache), work / "lm_eval.log")
  output = json.loads(out.read_text(encoding="utf-8"))
  return ToolRun(measured, output["seconds"]["scoring"], lm_eval_scores(output))


# ---------------------------------------------------------------------------- comparing


def max_difference(a: Scores, b: Scores) -> float:
  """The largest |a - b| over the (example, class) pairs, which must be the same."""
  if a.keys() != b.keys():
    raise ValueError(f"different (example, class) pairs: {len(a.keys() - b.keys())} only "
                     f"in the first, {len(b.keys() - a.keys())} only in the second")
  return max(abs(a[k] - b[k]) for k in a)


Pair = dict[str, ToolRun]  # tool -> its run


def is_quiet(pair: Pair, max_cores: float) -> bool:
  return all(r.measured.other_cores <= max_cores for r in pair.values())


def median_run(runs: list[ToolRun]) -> ToolRun:
  """The medians of runs' times and peaks (the scores of the first)."""
  return ToolRun(Measured(statistics.median(r.measured.wall_s for r in runs),
                          int(statistics.median(r.measured.peak_bytes for r in runs)),
                          statistics.median(r.measured.other_cores for r in runs)),
                 statistics.median(r.scoring_s for r in runs), runs[0].scores)


def verdict(ratio: float, target: float | None, at_most: bool = False) -> str:
  """The ratio and, given a target (at least it; `at_most`: at most it), whether it is met."""
  if target is None:
    return f"{ratio:.2f}x"
  met = ratio <= target if at_most else ratio >= target
  bound = "<=" if at_most else ">="
  return f"{ratio:.2f}x (target {bound} {target:g}x: {'met' if met else 'NOT met'})"


def tool_line(name: str, run: ToolRun) -> str:
  m = run.measured
  return (f"  {name:9s} wall {m.wall_s:7.1f} s  peak {m.peak_bytes / 2**30:6.2f} GiB  "
          f"scoring {run.scoring_s:7.1f} s  rest {m.wall_s - run.scoring_s:6.1f} s  "
          f"other processes {m.other_cores:4.2f} cores")


def ratio_line(invscale: ToolRun, lm_eval: ToolRun, task: str) -> str:
  wall = lm_eval.measured.wall_s / invscale.measured.wall_s
  memory = lm_eval.measured.peak_bytes / invscale.measured.peak_bytes
  return (f"  lm-eval / invscale: wall {verdict(wall, WALL_TARGETS.get(task))}, scoring "
          f"{lm_eval.scoring_s / invscale.scoring_s:.2f}x, peak memory "
          f"{verdict(memory, MEMORY_TARGETS.get(task))}")


def cold_line(cold: ToolRun, warm: ToolRun, task: str) -> str:
  ratio = cold.measured.wall_s / warm.measured.wall_s
  return f" invscale cold / warm caches: wall {verdict(ratio, COLD_TARGETS.get(task), True)}"


def report(task: str, condition: str, pairs: list[Pair], max_cores: float
           ) -> dict[str, ToolRun] | None:
  """Prints every pair of one task and cache condition, then the medians of its quiet
  ones; returns those medians (None without a quiet pair)."""
  print(f"\n{task}, {condition} caches:")
  for k, pair in enumerate(pairs):
    state = "quiet" if is_quiet(pair, max_cores) else "CONTENDED (left out)"
    print(f" pair {k + 1} ({' then '.join(pair)}): {state}")
    for name, run in pair.items():
      print(tool_line(name, run))
  quiet = [p for p in pairs if is_quiet(p, max_cores)]
  if not quiet:
    print(f" no quiet pair (other processes above {max_cores:g} cores in every pair): "
          f"no ratio is given")
    return None
  medians = {name: median_run([p[name] for p in quiet]) for name in TOOLS}
  print(f" medians of {len(quiet)} quiet pair{'s' * (len(quiet) > 1)}:")
  for name in TOOLS:
    print(tool_line(name, medians[name]))
  print(ratio_line(medians["invscale"], medians["lm-eval"], task))
  return medians


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
  """Scores `task`'s rows with both tools in turns, --repeats pairs per cache condition,
  each run on a quiet machine where possible; prints them. Returns whether every run's
  scores agreed."""
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

  def run(name: str, cache: pathlib.Path) -> ToolRun:
    if name == "invscale":
      return run_invscale(manifest, task, data_dir, fresh("invscale"), cache)
    return run_lm_eval(hf_dir, include, task_name, args.lm_eval_batch_size, fresh("lm_eval"),
                       cache)

  scores: list[Scores] = []
  medians: dict[str, dict[str, ToolRun] | None] = {}
  for condition in args.caches:
    warm = {name: fresh(f"warm_cache_{name}") for name in TOOLS}
    if condition == "warm":  # one unmeasured run of each fills its caches
      for name in TOOLS:
        scores.append(run(name, warm[name]).scores)
    pairs: list[Pair] = []
    for repeat in range(args.repeats):
      pair: Pair = {}
      for name in (TOOLS if repeat % 2 == 0 else TOOLS[::-1]):
        wait_quiet(args.quiet_cores, args.quiet_wait)
        pair[name] = run(name, warm[name] if condition == "warm" else fresh(f"cache_{name}"))
        scores.append(pair[name].scores)
      pairs.append(pair)
    medians[condition] = report(task, condition, pairs, args.quiet_cores)
  if medians.get("cold") and medians.get("warm"):
    print(cold_line(medians["cold"]["invscale"], medians["warm"]["invscale"], task))
  worst = max(max_difference(scores[0], s) for s in scores)
  agreed = worst <= args.tolerance
  print(f"{task}: {n_rows} examples, {len(scores[0])} classes; scores of every run "
        f"{'agree' if agreed else 'DISAGREE'}: max |diff| {worst:.1e} (tolerance "
        f"{args.tolerance:g})")
  return agreed


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", type=pathlib.Path,
                      default=REPO.parent / "shared" / "data" / "inverse_scaling")
  parser.add_argument("--tasks", default="memo-trap,hindsight-neglect")
  parser.add_argument("--rows", default="hindsight-neglect=64",
                      help="TASK=N,...: the first N rows of a task (default: every row)")
  parser.add_argument("--lm_eval_batch_size", default="32",
                      help="an integer or 'auto' (32 was lm-eval's fastest here)")
  parser.add_argument("--repeats", type=int, default=3,
                      help="pairs of runs (one of each tool, in turns) per cache condition")
  parser.add_argument("--caches", default="cold,warm",
                      help="cache conditions to measure: cold (empty caches every run), "
                           "warm (caches filled by an unmeasured run first), or both")
  parser.add_argument("--quiet_cores", type=float, default=0.25,
                      help="a run starts once other processes keep at most this many cores "
                           "busy, and a pair is quiet when none of its runs saw more")
  parser.add_argument("--quiet_wait", type=float, default=900,
                      help="seconds to wait for a quiet machine before a run (then it runs, "
                           "and its pair is marked contended if the machine stays busy)")
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
  args.caches = args.caches.split(",")
  if not set(args.caches) <= set(CONDITIONS):
    parser.error(f"--caches: expected some of {','.join(CONDITIONS)}, got {args.caches}")
  work = args.work_dir or pathlib.Path(tempfile.mkdtemp(prefix="vs_lm_eval-"))
  work.mkdir(parents=True, exist_ok=True)
  print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, other processes "
        f"{other_cores():.2f} cores; work dir {work}", flush=True)
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
