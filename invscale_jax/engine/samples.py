"""`--log_samples`: the text each example was scored on, beside its run's records.

For every run of a score command, RESULTS/runs/<run_key>/samples/prompts.jsonl holds one
line per example: `example_id` (the records' key), `prompt` (the text as built:
demonstrations included; `n_truncated` prompt tokens were then cut from its start to fit
max_length, `n_demos_dropped` demonstrations left out), `targets` (the classes, or the
completion) and `answer_index` (null for a completion). Like lm-evaluation-harness's
`--log_samples`. It changes no number, so it is not part of the run key; a re-run with the
flag writes the file for runs already complete. It sits in a subfolder, where readers of
chunks do not look.
"""

from __future__ import annotations

import json
from typing import Sequence

from invscale_jax import storage
from invscale_jax import tokenizer as tokenizer_lib
from invscale_jax.engine import plan as plan_lib

PATH = "samples/prompts.jsonl"


def lines(requests: Sequence) -> str:
  """The file's text for a run's requests."""
  return "".join(json.dumps({"example_id": r.example_id, "prompt": r.prompt_text,
                             "targets": list(r.class_texts), "answer_index": r.answer_index,
                             "n_truncated": r.n_truncated,
                             "n_demos_dropped": r.n_demos_dropped}, ensure_ascii=False) + "\n"
                 for r in requests)


def write(runs: Sequence[plan_lib.Run], options: plan_lib.ScoringOptions, data_dir: str,
          out: str) -> list[str]:
  """Writes every run's samples file; returns their paths."""
  paths = []
  for run in runs:
    requests = plan_lib.requests_for(run, tokenizer_lib.from_spec(run.entry.vocabulary),
                                     options, data_dir)
    path = storage.join(run.dir(out), PATH)
    storage.write_text(path, lines(requests))
    paths.append(path)
  return paths
