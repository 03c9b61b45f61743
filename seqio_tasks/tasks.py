"""SeqIO tasks for the 11 prize tasks and your own declared tasks x prompt variants.

Names are `invscale:<task>.<variant>`, e.g. `invscale:neqa.zero_shot`,
`invscale:memo_trap.1_shot`. Declared tasks (`task_registry`) get the same variants, the
chain-of-thought ones only where their declaration gives CoT exemplars. A classification example becomes one row per class, carrying
its group (`example_id`), `class_index`, `is_correct` and passthrough metadata; a
sequence-probability example becomes one prompt/completion row. Inputs and targets are
tokenized separately (SeqIO's convention); targets never end with EOS, inputs do for an
encoder-decoder model (`gin_macros.encoder_eos`: INVSCALE_ENCODER_EOS, else whether
T5X's MODEL is an EncoderDecoderModel), as T5's tasks and `invscale score` do.

The data directory, vocabulary and prompt options are resolved when a dataset is built,
not at import, so settings given after `import seqio_tasks` apply. They are gin macros
(`invscale_jax.gin_macros`), never gin configurables: importing this module registers
nothing with gin, so it works at any time, including after gin is locked.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import seqio
import tensorflow as tf

from invscale_jax import catalog, gin_macros, task_registry
from invscale_jax import vocab as vocab_lib
from invscale_jax.data import declarations, sources, tfds_source, variants
from invscale_jax.data.task_rows import PromptOptions, rows_for
from seqio_tasks import metrics

sources.use_tfds(tfds_source.examples)  # INVSCALE_DATA_SOURCE = 'tfds' reads through SeqIO

PREFIX = task_registry.PREFIX
SPLIT = "test"
# The registered variants; `register_variant` adds more (any "<k>_shot").
VARIANTS = ("zero_shot", "1_shot", "3_shot", "5_shot", "cot_zero_shot", "cot_1_shot")


def task_name(task: str, variant: str) -> str:
  return f"{PREFIX}:{task_registry.get(task).seqio_name}.{variant}"


def parse_task_name(name: str) -> tuple[task_registry.Task, variants.Variant]:
  """`invscale:<task>.<variant>` -> (task spec, variant); errors name the bad part."""
  prefix, _, rest = name.partition(":")
  task, _, variant = rest.partition(".")
  if prefix != PREFIX or not task or not variant:
    raise ValueError(f"task: {name!r} is not of the form {PREFIX}:<task>.<variant>")
  return task_registry.get(task), variants.parse(variant)


def has_variant(spec: task_registry.Task, variant: variants.Variant) -> bool:
  """Chain-of-thought variants exist for prize tasks and for declared tasks with exemplars."""
  return spec.prize or not variant.chain_of_thought or spec.exemplar_path is not None


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *,
                spec: task_registry.Task, variant: variants.Variant,
                vocabulary: seqio.Vocabulary, options: PromptOptions | None,
                data_dir: str | None) -> tf.data.Dataset:
  del split, shuffle_files, seed  # one split, in file order
  rows = rows_for(spec, variant, vocabulary, options or PromptOptions.from_gin(), data_dir)
  return tf.data.Dataset.from_tensor_slices(rows)


def _append_encoder_eos(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
                        encoder_eos: bool | None) -> tf.data.Dataset:
  """`inputs` + [EOS] when `encoder_eos` (None: the gin setting) says so."""
  if not (gin_macros.encoder_eos() if encoder_eos is None else encoder_eos):
    return dataset
  eos = output_features["inputs"].vocabulary.eos_id
  return dataset.map(lambda row: {**row, "inputs": tf.concat([row["inputs"], [eos]], 0)})


def _postprocess(output: Any, example: Mapping[str, Any] | None = None,
                 is_target: bool = False) -> Any:
  """Targets become (example_id, class_index, answer_index) for the score metrics."""
  if not is_target or example is None:
    return output
  return (int(example["example_id"]), int(example["class_index"]), int(example["answer_index"]))


def build_task(task: str, variant: str, vocabulary: seqio.Vocabulary | None = None,
               options: PromptOptions | None = None, data_dir: str | None = None,
               encoder_eos: bool | None = None) -> seqio.Task:
  """An (unregistered) SeqIO task; `vocabulary` defaults to the configured one, and
  `encoder_eos` (EOS after `inputs`) to the gin setting."""
  spec, parsed = task_registry.get(task), variants.parse(variant)
  if not has_variant(spec, parsed):
    raise ValueError(f"{spec.source}: cot_exemplars: not declared, so task {spec.name} has "
                     f"no {parsed.name} variant")
  vocabulary = vocabulary or vocab_lib.ConfiguredVocabulary()
  source = seqio.FunctionDataSource(
      functools.partial(_dataset_fn, spec=spec, variant=parsed, vocabulary=vocabulary,
                        options=options, data_dir=data_dir),
      splits=(SPLIT,))
  features = {k: seqio.Feature(vocabulary, add_eos=False) for k in ("inputs", "targets")}
  metric_fns = (metrics.CLASSIFICATION_METRICS if spec.metric == catalog.CLASSIFICATION
                else metrics.SEQUENCE_METRICS)
  return seqio.Task(task_name(spec.name, parsed.name), source,
                    preprocessors=[seqio.preprocessors.tokenize, functools.partial(
                        _append_encoder_eos, encoder_eos=encoder_eos)],
                    output_features=features,
                    postprocess_fn=_postprocess, metric_fns=list(metric_fns))


def register_variant(variant: str, specs: Sequence[task_registry.Task] | None = None
                     ) -> list[str]:
  """Registers `variant` for `specs` (default: every known task) where the task has it
  (idempotent); returns the task names."""
  names = []
  for spec in task_registry.known() if specs is None else specs:
    if not has_variant(spec, variants.parse(variant)):
      continue
    name = task_name(spec.name, variant)
    if name not in seqio.TaskRegistry.names():
      seqio.TaskRegistry.add_provider(name, build_task(spec.name, variant))
    names.append(name)
  return names


def register_task_dirs(directories: Sequence[str]) -> list[str]:
  """Declares the tasks of these task directories and registers their variants."""
  specs = declarations.read_dirs(directories)
  task_registry.add(specs)
  return [name for variant in VARIANTS for name in register_variant(variant, specs)]


def register_all() -> list[str]:
  """Every variant of the prize tasks and of the tasks declared in the directories that
  gin (INVSCALE_TASK_DIRS) and the environment name now."""
  task_registry.add(declarations.read_dirs(task_registry.environment_dirs()))
  return [name for variant in VARIANTS for name in register_variant(variant)]
