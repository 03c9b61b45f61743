"""SeqIO tasks for the 11 prize tasks and your own declared tasks x prompt variants.

Names are `invscale:<task>.<variant>`, e.g. `invscale:neqa.zero_shot`,
`invscale:memo_trap.1_shot`. Declared tasks (`task_registry`) get the same variants, the
chain-of-thought ones only where their declaration gives CoT exemplars. A classification example becomes one row per class, carrying
its group (`example_id`), `class_index`, `is_correct` and passthrough metadata; a
sequence-probability example becomes one prompt/completion row. Inputs and targets are
tokenized separately (SeqIO's convention) without EOS.

The data directory, vocabulary and prompt options are resolved when a dataset is built,
not at import, so settings given after `import seqio_tasks` apply. They are gin macros
(`invscale_jax.gin_macros`), never gin configurables: importing this module registers
nothing with gin, so it works at any time, including after gin is locked.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import seqio
import tensorflow as tf

from invscale_jax import catalog, gin_macros, task_registry
from invscale_jax import vocab as vocab_lib
from invscale_jax.data import datadir, declarations, variants
from invscale_jax.data.loader import Example
from seqio_tasks import metrics

PREFIX = task_registry.PREFIX
SPLIT = "test"
# The registered variants; `register_variant` adds more (any "<k>_shot").
VARIANTS = ("zero_shot", "1_shot", "3_shot", "5_shot", "cot_zero_shot", "cot_1_shot")


@dataclasses.dataclass(frozen=True)
class PromptOptions:
  """How prompts are built: few-shot seed, the maximum length in tokens (None: no cap) and,
  for chain-of-thought variants, the room kept for generated tokens."""

  seed: int = 0
  max_length: int | None = 2048
  generation_length: int = 128

  @classmethod
  def from_gin(cls) -> PromptOptions:
    """The options bound by the gin macros INVSCALE_SEED, INVSCALE_MAX_LENGTH and
    INVSCALE_GENERATION_LENGTH; the defaults where unbound."""
    default = cls()
    return cls(gin_macros.value(gin_macros.SEED, default.seed),
               gin_macros.value(gin_macros.MAX_LENGTH, default.max_length),
               gin_macros.value(gin_macros.GENERATION_LENGTH, default.generation_length))


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


def _rows(examples: list[Example], spec: task_registry.Task, variant: variants.Variant,
          prompts: list[variants.Fitted]) -> dict[str, list[Any]]:
  """One row per class (classification) or per completion (sequence probability)."""
  rows: dict[str, list[Any]] = {k: [] for k in (
      "inputs", "targets", "example_id", "class_index", "n_classes", "answer_index",
      "is_correct", "task", "variant", "round", "part", "n_demos", "n_demos_dropped")}
  for example, prompt in zip(examples, prompts):
    targets = example.classes or (example.completion,)
    for index, target in enumerate(targets):
      is_class = bool(example.classes)
      for key, value in (
          ("inputs", prompt.text), ("targets", target), ("example_id", example.example_id),
          ("class_index", index if is_class else -1), ("n_classes", len(targets)),
          ("answer_index", example.answer_index if is_class else -1),
          ("is_correct", is_class and index == example.answer_index), ("task", spec.name),
          ("variant", variant.name), ("round", example.round or -1),
          ("part", example.part or -1), ("n_demos", prompt.n_demos),
          ("n_demos_dropped", prompt.n_dropped)):
        rows[key].append(value)
  return rows


def rows_for(spec: task_registry.Task, variant: variants.Variant, vocabulary: seqio.Vocabulary,
             options: PromptOptions, data_dir: str | None = None) -> dict[str, list[Any]]:
  """The untokenized rows of one task x variant (what the SeqIO source yields)."""
  examples = datadir.load_task(datadir.resolve(data_dir), spec.name)
  count = lambda text: len(vocabulary.encode(text))
  reserve = options.generation_length if variant.chain_of_thought else 0
  prompts = variants.build_prompts(examples, variant, options.seed, options.max_length, count,
                                   reserve)
  return _rows(examples, spec, variant, prompts)


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *,
                spec: task_registry.Task, variant: variants.Variant,
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
                    preprocessors=[seqio.preprocessors.tokenize], output_features=features,
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
