"""T5X infer's score-mode outputs, written as t5x/infer.py writes them (T5X is not installed).

Emulates, from its documented behaviour at T5X commit cc342d4: `infer_task` (the task's
dataset trimmed to the feature lengths, batched into chunks with `padded_batch`, one
chunk file each in `tmp-<task>-00000-of-00001/`, merged into
`<task>-score.jsonl-00000-of-00001`, then the `.COMPLETED` marker and the temporary dir
removed) and `write_inferences_to_file` (one JSON line per row: the `*_pretokenized`
features, or those named by `input_fields_to_include`, converted as T5X converts them,
and the score; encoded with `seqio.TensorAndNumpyEncoder`).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable, Sequence

import numpy as np
import seqio
import tensorflow as tf

ScoreFn = Callable[[list[dict[str, Any]]], Sequence[float]]  # untrimmed rows -> scores


def json_value(value: Any) -> Any:
  """A feature value as T5X writes it: text decoded, every numpy number a float (integers
  too), arrays as lists."""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, (np.floating, np.integer)):
    return float(value)
  if isinstance(value, np.ndarray):
    return value.tolist()
  return value


def write_inferences_to_file(path: str, inferences: tuple[Sequence[Any], dict],
                             task_ds: tf.data.Dataset, mode: str,
                             vocabulary: seqio.Vocabulary | None = None,
                             include_all_inputs: bool = False,
                             input_fields_to_include: Sequence[str] | None = None) -> None:
  """T5X's default write function in score mode."""
  assert mode == "score" and not (include_all_inputs and input_fields_to_include is not None)
  del vocabulary
  scores, _ = inferences
  with open(path, "w", encoding="utf-8") as f:
    for i, row in task_ds.enumerate().as_numpy_iterator():
      if include_all_inputs:
        kept = row
      elif input_fields_to_include is not None:
        kept = {k: v for k, v in row.items() if k in input_fields_to_include or (
            k.endswith("_pretokenized") and k[:-len("_pretokenized")] in input_fields_to_include)}
      else:
        kept = {k: v for k, v in row.items() if k.endswith("_pretokenized")}
      line = {"inputs": {k: json_value(v) for k, v in kept.items()},
              "score": json_value(scores[i])}
      f.write(json.dumps(line, cls=seqio.TensorAndNumpyEncoder) + "\n")


def infer_task(task: seqio.Task, output_dir: str, lengths: dict[str, int], score_fn: ScoreFn,
               write_fn: Callable[..., None] = write_inferences_to_file,
               chunk_rows: int = 8) -> str:
  """Writes the score output of `task` as T5X's infer does; returns the file's path."""
  os.makedirs(output_dir, exist_ok=True)
  name = f"{task.name}-score.jsonl-00000-of-00001"
  tmp_dir = os.path.join(output_dir, f"tmp-{task.name}-00000-of-00001")
  os.makedirs(tmp_dir, exist_ok=True)
  ds = task.get_dataset(sequence_length=lengths, split="test", shuffle=False)
  scores = np.asarray(score_fn(list(ds.as_numpy_iterator())), np.float32)
  chunks = ds.padded_batch(chunk_rows, drop_remainder=False).enumerate()
  for chunk, batch in chunks.as_numpy_iterator():
    chunk_ds = tf.data.Dataset.from_tensor_slices(batch)
    first = int(chunk) * chunk_rows
    chunk_scores = list(scores[first:first + len(next(iter(batch.values())))])
    chunk_path = os.path.join(tmp_dir, f"{name}-chunk{int(chunk):05}")
    write_fn(chunk_path, (chunk_scores, {}), chunk_ds, "score", None)
    open(chunk_path + ".COMPLETED", "w").close()
  with open(os.path.join(output_dir, name), "wb") as merged:
    for chunk_name in sorted(n for n in os.listdir(tmp_dir) if not n.endswith(".COMPLETED")):
      with open(os.path.join(tmp_dir, chunk_name), "rb") as f:
        shutil.copyfileobj(f, merged)
  shutil.rmtree(tmp_dir)
  open(os.path.join(output_dir, name + ".COMPLETED"), "w").close()
  return os.path.join(output_dir, name)
