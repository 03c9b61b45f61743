"""SeqIO tasks for the 11 prize tasks x prompt variants, built from one table.

Names are `invscale:<task>.<variant>`, e.g. `invscale:neqa.zero_shot`,
`invscale:memo_trap.1_shot`. A classification example becomes one row per class, carrying
its group (`example_id`), `class_index`, `is_correct` and passthrough metadata; a
sequence-probability example becomes one prompt/completion row. Inputs and targets are
tokenized separately (SeqIO's convention) without EOS.

The data directory, vocabulary and prompt options are resolved when a dataset is built,
not at import, so settings given after `import seqio_tasks` apply. They are gin macros
(`invscale_jax.gin_macros`), never gin configurables: importing this module registers
nothing with gin, so it works at any time, including after gin is locked.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import seqio
import tensorflow as tf

from invscale_jax import catalog
from invscale_jax import vocab as vocab_lib
from invscale_jax.data import variants
from invscale_jax.data.task_rows import PromptOptions, rows_for
from seqio_tasks import metrics

PREFIX = "invscale"
SPLIT = "test"
# The registered variants; `register_variant` adds more (any "<k>_shot").
VARIANTS = ("zero_shot", "1_shot", "3_shot", "5_shot", "cot_zero_shot", "cot_1_shot")


def task_name(task: str, variant: str) -> str:
  return f"{PREFIX}:{catalog.get(task).seqio_name}.{variant}"


def parse_task_name(name: str) -> tuple[catalog.TaskSpec, variants.Variant]:
  """`invscale:<task>.<variant>` -> (task spec, variant); errors name the bad part."""
  prefix, _, rest = name.partition(":")
  task, _, variant = rest.partition(".")
  if prefix != PREFIX or not task or not variant:
    raise ValueError(f"task: {name!r} is not of the form {PREFIX}:<task>.<variant>")
  return catalog.get(task), variants.parse(variant)


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *,
                spec: catalog.TaskSpec, variant: variants.Variant,
                vocabulary: seqio.Vocabulary, options: PromptOptions | None,
                data_dir: str | None) -> tf.data.Dataset:
  del split, shuffle_files, seed  # one split, in file order
  rows = rows_for(spec, variant, vocabulary, options or PromptOptions.from_gin(), data_dir)
  return tf.data.Dataset.from_tensor_slices(rows)


def _postprocess(output: Any, example: Mapping[str, Any] | None = None,
                 is_target: bool = False) -> Any:
  """Targets become (example_id, class_index, answer_index) for the score metrics."""
  if not is_target or example is None:
    return output
  return (int(example["example_id"]), int(example["class_index"]), int(example["answer_index"]))


def build_task(task: str, variant: str, vocabulary: seqio.Vocabulary | None = None,
               options: PromptOptions | None = None, data_dir: str | None = None) -> seqio.Task:
  """An (unregistered) SeqIO task; `vocabulary` defaults to the configured one."""
  spec, parsed = catalog.get(task), variants.parse(variant)
  vocabulary = vocabulary or vocab_lib.ConfiguredVocabulary()
  source = seqio.FunctionDataSource(
      functools.partial(_dataset_fn, spec=spec, variant=parsed, vocabulary=vocabulary,
                        options=options, data_dir=data_dir),
      splits=(SPLIT,))
  features = {k: seqio.Feature(vocabulary, add_eos=False) for k in ("inputs", "targets")}
  metric_fns = (metrics.CLASSIFICATION_METRICS if spec.metric == catalog.CLASSIFICATION
                else metrics.SEQUENCE_METRICS)
  return seqio.Task(task_name(spec.name, parsed.name), source,
                    preprocessors=[seqio.preprocessors.tokenize], output_features=features,
                    postprocess_fn=_postprocess, metric_fns=list(metric_fns))


def register_variant(variant: str) -> list[str]:
  """Registers `variant` for all 11 tasks (idempotent); returns the task names."""
  names = []
  for spec in catalog.TASKS:
    name = task_name(spec.name, variant)
    if name not in seqio.TaskRegistry.names():
      seqio.TaskRegistry.add_provider(name, build_task(spec.name, variant))
    names.append(name)
  return names


def register_all() -> list[str]:
  return [name for variant in VARIANTS for name in register_variant(variant)]
