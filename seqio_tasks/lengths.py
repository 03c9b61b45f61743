"""TASK_FEATURE_LENGTHS that keep every row of a task whole.

SeqIO trims a feature longer than its task feature length and keeps the FIRST tokens, so
an `inputs` length shorter than a prompt silently cuts the question off its end. In a T5X
gin file (see gin/t5x/score_invscale.gin)::

  from seqio_tasks import lengths
  TASK_FEATURE_LENGTHS = @lengths.feature_lengths()
  lengths.feature_lengths.task = %MIXTURE_OR_TASK_NAME

`invscale tasks lengths TASK.VARIANT` prints the same numbers.
"""

from __future__ import annotations

import seqio
import tensorflow as tf

from seqio_tasks import tasks

FEATURES = ("inputs", "targets")


def max_lengths(task: seqio.Task) -> dict[str, int]:
  """The longest `inputs` and `targets` over the task's rows, in its vocabulary's tokens."""
  dataset = task.get_dataset(sequence_length=None, split=tasks.SPLIT, shuffle=False)
  longest = dataset.reduce({k: tf.constant(0) for k in FEATURES}, lambda acc, row: {
      k: tf.maximum(acc[k], tf.size(row[k])) for k in FEATURES})
  return {k: int(v) for k, v in longest.items()}


def feature_lengths(task: str) -> dict[str, int]:
  """`max_lengths` of a registered task `invscale:<task>.<variant>`, with the configured
  vocabulary, data dir and prompt options; a `<k>_shot` variant is registered first."""
  _, variant = tasks.parse_task_name(task)
  tasks.register_variant(variant.name)
  return max_lengths(seqio.get_mixture_or_task(task))
