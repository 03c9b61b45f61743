"""A task's rows under a prompt variant, untokenized: what its SeqIO task reads, and what
the scoring path tokenizes directly (without TensorFlow).

A classification example becomes one row per class, carrying its group (`example_id`),
`class_index`, `is_correct` and passthrough metadata; a sequence-probability example
becomes one prompt/completion row. Rows are columns: a dict of equally long lists.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

from invscale_jax import gin_macros, task_registry
from invscale_jax.data import sources, variants
from invscale_jax.data.loader import Example


class Encoder(Protocol):  # a SeqIO vocabulary or a `tokenizer.Tokenizer`
  encode: Callable[[str], Any]


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


def rows_for(spec: task_registry.Task, variant: variants.Variant, vocabulary: Encoder,
             options: PromptOptions, data_dir: str | None = None) -> dict[str, list[Any]]:
  """The untokenized rows of one task x variant (what the SeqIO source yields)."""
  examples = sources.load_examples(spec, data_dir)
  count = lambda text: len(vocabulary.encode(text))
  reserve = options.generation_length if variant.chain_of_thought else 0
  prompts = variants.build_prompts(examples, variant, options.seed, options.max_length, count,
                                   reserve)
  return _rows(examples, spec, variant, prompts)


