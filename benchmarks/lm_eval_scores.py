"""lm-evaluation-harness on one task: the child process `vs_lm_eval.py` times.

Runs lm-eval's Hugging Face backend (float32, CPU) through its Python API, as its CLI
does, with samples logged, and writes JSON: every document's per-choice log-likelihoods
(from the logged samples), the batch sizes used and the seconds of each phase (imports,
model load, loglikelihood requests, the whole evaluation).

  python benchmarks/lm_eval_scores.py --model HF_DIR --include_path TASK_DIR \
      --task NAME --batch_size 32 --out OUT.json
"""

import time

START = time.perf_counter()

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import json
from typing import Any, Callable


def timed_method(obj: Any, name: str, seconds: list[float]) -> None:
  """Wraps `obj.name` so that each call's wall time is appended to `seconds`."""
  method: Callable[..., Any] = getattr(obj, name)

  def wrapper(*args, **kwargs):
    start = time.perf_counter()
    try:
      return method(*args, **kwargs)
    finally:
      seconds.append(time.perf_counter() - start)

  setattr(obj, name, wrapper)


def choice_scores(samples: list[dict[str, Any]]) -> dict[int, list[float]]:
  """doc_id -> the log-likelihood of each choice, in choice order, from logged samples."""
  return {int(s["doc_id"]): [float(r[0]) for r in s["filtered_resps"]] for s in samples}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help="Hugging Face model directory")
  parser.add_argument("--include_path", required=True, help="directory of the task YAML")
  parser.add_argument("--task", required=True)
  parser.add_argument("--batch_size", default="32", help="an integer or 'auto'")
  parser.add_argument("--out", required=True, help="JSON file to write")
  args = parser.parse_args()
  import lm_eval
  from lm_eval.models.huggingface import HFLM
  from lm_eval.tasks import TaskManager
  imported = time.perf_counter()
  batch_size = args.batch_size if args.batch_size.startswith("auto") else int(args.batch_size)
  lm = HFLM(pretrained=args.model, dtype="float32", device="cpu", batch_size=batch_size)
  loaded = time.perf_counter()
  scoring: list[float] = []
  timed_method(lm, "loglikelihood", scoring)
  output = lm_eval.simple_evaluate(model=lm, tasks=[args.task], log_samples=True,
                                   task_manager=TaskManager(include_path=args.include_path))
  done = time.perf_counter()
  result = {"scores": choice_scores(output["samples"][args.task]),
            "batch_sizes": sorted(set(lm.batch_sizes.values())) or [lm.batch_size_per_gpu],
            "seconds": {"imports": imported - START, "load": loaded - imported,
                        "scoring": sum(scoring), "evaluate": done - loaded}}
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(result, f)


if __name__ == "__main__":
  main()
