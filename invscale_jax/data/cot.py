"""Chain-of-thought (CoT) prompts: Wei et al.'s 1-shot CoT, and zero-shot "step by step".

Each prize task has one hand-written exemplar, `seqio_tasks/cot_exemplars/<task>.json` (replace
them by passing `directory` to `load_exemplar`); a declared task has the file its declaration
names in `cot_exemplars` (or no CoT variants). An exemplar has the fields: task, prompt (a new example in
the task's own format), classes and answer_index (null for a sequence-probability task, which
gives `completion` instead), rationale (must not contain the answer phrase), answer_phrase, note.

Prompts, exactly:
- 1-shot CoT: exemplar.prompt + " " + rationale + " " + answer_phrase + answer + "\\n\\n\\n"
  + query prompt, where `answer` is the exemplar's correct class (or completion) with its own
  leading space, then "." unless it already ends in ".", "!" or "?"
  (e.g. `... spoil the <rationale> So the answer is soup.`).
- zero-shot CoT: query prompt + " " + STEP_BY_STEP.

Reading the answer back, two modes:
- generate, then parse: the model continues the prompt; `truncate` cuts the continuation at
  `stop_strings(task)` and `extract.parse` reads the class after its last answer phrase.
- generate, then score: the classes (leading space included) are rank-classified after
  `scoring_prefix(prompt, generation)` = prompt + the generated rationale (the truncated
  continuation before its last answer phrase, or all of it, right-stripped) + " " +
  answer_phrase, the same text that precedes the class in the exemplar. Zero-shot CoT needs
  this mode: the model has never seen the answer phrase.

prompt-injection is scored by sequence probability, so CoT is not applicable to its metric:
its CoT variants generate nothing, and score the completion's log-probability after the CoT
prompt (for 1-shot, its exemplar, rationale and completion included, prepended to the query;
for zero-shot, after the query + " " + STEP_BY_STEP).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, NoReturn, Sequence

from invscale_jax import catalog, storage, task_registry
from invscale_jax.data.extract import ANSWER_PHRASE, split_at_answer

DEFAULT_DIRECTORY = pathlib.Path(__file__).resolve().parents[2] / "seqio_tasks" / "cot_exemplars"
STEP_BY_STEP = "Let's think step by step."
# Where a continuation has started a new example: the demonstration separator, and the
# opening of each task's prompts.
_STOP_ALL = (catalog.DEMO_SEPARATOR, "\nQuestion:")
_STOP_TASK = {
    "into-the-unknown": ("\nWe know the following:",),
    "memo-trap": ("\nWrite a ",),
    "modus-tollens": ("\nConsider the following statements:",),
    "neqa": ("\nThe following are multiple choice questions",),
    "pattern-matching-suppression": ("\nWrite a sequence",),
    "redefine": ("\nRedefine ", ". Redefine "),
    "repetitive-algebra": ("\nQ:",),
    "resisting-correction": ("\nRepeat the input", "\nInput:"),
    "sig-figs": ("\nPlease round",),
}
_TEXT_FIELDS = ("task", "prompt", "rationale", "answer_phrase", "note")
_FIELDS = frozenset(_TEXT_FIELDS + ("classes", "answer_index", "completion"))


class ExemplarError(ValueError):
  """A malformed exemplar file; the message is one line: `FILE: FIELD: reason`."""


@dataclasses.dataclass(frozen=True)
class Exemplar:
  """One worked demonstration for a task's 1-shot CoT prompt."""

  task: str
  prompt: str
  classes: tuple[str, ...] | None  # None for a sequence-probability task
  answer_index: int | None
  completion: str | None  # the correct continuation of a sequence-probability task
  rationale: str
  answer_phrase: str
  note: str

  @property
  def answer(self) -> str:
    """The correct class, or the completion."""
    return self.completion if self.classes is None else self.classes[self.answer_index]

  @property
  def worked_answer(self) -> str:
    """What follows the exemplar prompt: " " + rationale + " " + answer phrase + answer."""
    closed = self.answer if self.answer.endswith((".", "!", "?")) else self.answer + "."
    return f" {self.rationale} {self.answer_phrase}{closed}"


def _fail(path: str, field: str, reason: str) -> NoReturn:
  raise ExemplarError(f"{path}: {field}: {reason}")


def _read(path: str) -> dict[str, Any]:
  try:
    raw = json.loads(storage.read_text(path))
  except FileNotFoundError:
    _fail(path, "file", "not found")
  except storage.StorageError as e:  # not UTF-8, unreadable
    _fail(path, "file", e.detail)
  except json.JSONDecodeError as e:
    _fail(path, "file", f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})")
  if not isinstance(raw, dict):
    _fail(path, "file", f"must hold a JSON object, got {type(raw).__name__}")
  return raw


def _check_answer(path: str, raw: dict[str, Any], metric: str) -> None:
  classes, index, completion = raw.get("classes"), raw.get("answer_index"), raw.get("completion")
  if metric == catalog.SEQUENCE_PROBABILITY:
    for key, value in (("classes", classes), ("answer_index", index)):
      if value is not None:
        _fail(path, key, "must be null for a sequence-probability task")
    if not isinstance(completion, str) or not completion:
      _fail(path, "completion", "must be a non-empty string")
    return
  if completion is not None:
    _fail(path, "completion", "only a sequence-probability task has one")
  if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
    _fail(path, "classes", "must be a list of non-empty strings")
  if len(set(classes)) != len(classes) or len(classes) < 2:
    _fail(path, "classes", f"needs at least 2 distinct classes, got {classes!r}")
  if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(classes):
    _fail(path, "answer_index", f"must be an integer in [0, {len(classes)}), got {index!r}")


def exemplar_path(task: str) -> str:
  """The file of the task's exemplar: the shipped one of a prize task, or the one its
  declaration names (a task without one has no CoT variants: an error)."""
  spec = task_registry.get(task)
  if spec.prize:
    return str(DEFAULT_DIRECTORY / f"{spec.name}.json")
  if spec.exemplar_path is None:
    raise ExemplarError(f"{spec.source}: cot_exemplars: not declared, so task {spec.name} has "
                        f"no chain-of-thought variants")
  return spec.exemplar_path


def load_exemplar(task: str, directory: str | pathlib.Path | None = None) -> Exemplar:
  """The task's exemplar: `directory`/<task>.json if given, else `exemplar_path(task)`."""
  spec = task_registry.get(task)
  path = (storage.join(directory, f"{spec.name}.json") if directory is not None
          else exemplar_path(task))
  raw = _read(path)
  if unknown := sorted(set(raw) - _FIELDS):
    _fail(path, unknown[0], f"unknown field (known: {', '.join(sorted(_FIELDS))})")
  for key in _TEXT_FIELDS:
    if not isinstance(raw.get(key), str) or not raw[key].strip():
      _fail(path, key, "must be a non-empty string")
  if raw["task"] != spec.name:
    _fail(path, "task", f"is {raw['task']!r}, expected {spec.name!r}")
  _check_answer(path, raw, spec.metric)
  if split_at_answer(raw["rationale"], raw["answer_phrase"])[1] is not None:
    _fail(path, "rationale", f"must not contain the answer phrase {raw['answer_phrase']!r}")
  classes = raw.get("classes")
  return Exemplar(task=spec.name, prompt=raw["prompt"],
                  classes=None if classes is None else tuple(classes),
                  answer_index=raw.get("answer_index"), completion=raw.get("completion"),
                  rationale=raw["rationale"], answer_phrase=raw["answer_phrase"], note=raw["note"])


def demonstration(exemplar: Exemplar) -> str:
  """The worked exemplar: its prompt, rationale, answer phrase and answer."""
  return exemplar.prompt + exemplar.worked_answer


def cot_1_shot_prompt(query_prompt: str, exemplar: Exemplar) -> str:
  """The worked exemplar, three newlines, then the query."""
  return demonstration(exemplar) + catalog.DEMO_SEPARATOR + query_prompt


def cot_zero_shot_prompt(query_prompt: str) -> str:
  return f"{query_prompt} {STEP_BY_STEP}"


def scoring_prefix(prompt: str, generation: str, answer_phrase: str = ANSWER_PHRASE) -> str:
  """The text after which the classes are scored in generate-then-score mode."""
  rationale, _ = split_at_answer(generation, answer_phrase)
  return f"{prompt}{rationale.rstrip()} {answer_phrase}"


def stop_strings(task: str) -> tuple[str, ...]:
  """Strings that end a CoT generation for `task` (release or SeqIO name)."""
  return _STOP_ALL + _STOP_TASK.get(task_registry.get(task).name, ())


def truncate(generation: str, stops: Sequence[str]) -> str:
  """The generation up to (not including) the earliest stop string."""
  found = [i for i in map(generation.find, stops) if i >= 0]
  return generation[:min(found, default=len(generation))]
