"""The 11 Inverse Scaling Prize tasks: the single table every other module reads.

The loader, the SeqIO registrations, the downloader, `invscale data status` and the
docs all come from `TASKS`; nothing else lists task names, files or hashes. Code that
takes any task (a prize task or one declared in a task directory) looks it up in
`task_registry`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

CLASSIFICATION = "classification"
SEQUENCE_PROBABILITY = "sequence_probability"
# The prize's few-shot protocol joins demonstrations and the query with three newlines.
DEMO_SEPARATOR = "\n\n\n"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One released task file and what is known about it."""

  name: str  # release name, e.g. "hindsight-neglect"
  metric: str  # CLASSIFICATION or SEQUENCE_PROBABILITY
  filename: str  # official file name in the release
  sha256: str  # official sha256 of that file
  size: int  # official size in bytes
  round: int  # prize round that released it
  reported_rows: int | None  # row count reported for the release (None: not reported)
  demos_in_prompt: bool = False  # prompt already holds demonstrations
  # The released file changed after the prize's own evaluation of the task.
  changed_after_evaluation: bool = False

  prize: ClassVar[bool] = True  # (declared tasks, `data.declarations.UserTask`, are not)

  @property
  def seqio_name(self) -> str:
    """Name used in SeqIO task names: `invscale:<seqio_name>.<variant>`."""
    return self.name.replace("-", "_")

  @property
  def headline(self) -> str:
    """The metric the task is judged by: accuracy, or loss for sequence probability."""
    return "loss" if self.metric == SEQUENCE_PROBABILITY else "accuracy"


TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("hindsight-neglect", CLASSIFICATION, "hindsight-neglect_classification.jsonl",
             "1539e144e20c760cd70980ca012d3d75744b59385bdf78cffc4d02560c4b3686", 953341, 1, 315,
             demos_in_prompt=True),
    TaskSpec("into-the-unknown", CLASSIFICATION, "into-the-unknown_classification.jsonl",
             "74b5e1aca9e4aeedd2b6ce1686d0e5ee9cd380509d65bca37cad1ebebaecf51d", 1012764, 2, 1824),
    TaskSpec("memo-trap", CLASSIFICATION, "memo-trap_classification.jsonl",
             "f09aac90bf841f2eb899d23beed8c8ccad2e1d3ab4f0fd3f1ff403fd5c7e11f2", 165763, 2, 936,
             changed_after_evaluation=True),
    TaskSpec("modus-tollens", CLASSIFICATION, "modus-tollens_classification.jsonl",
             "fdf82374d7e401902f25303428678d3b540031ec81c7a7078cb3d7f346314a7d", 426022, 2, 1236),
    TaskSpec("neqa", CLASSIFICATION, "neqa_classification.jsonl",
             "50ca9dca517dcd7fcdbb6d7f750fbbdade2142c0ac2da2bd196dc27464b464e6", 84046, 1, 300),
    TaskSpec("pattern-matching-suppression", CLASSIFICATION,
             "pattern-matching-suppression_classification.jsonl",
             "29ff41ccc2592ecd19c8bdf8e632a394314cb7d84d21e668d9060070d95fdad0", 338768, 2, 1428),
    TaskSpec("prompt-injection", SEQUENCE_PROBABILITY, "prompt-injection_sequence-probability.jsonl",
             "0c8e7342a256e5ff53913e83c7477f57d5b776d77fbab2aef473e92054773e21", 863354, 2, None),
    TaskSpec("redefine", CLASSIFICATION, "redefine_classification.jsonl",
             "4ca8573039b0f943ea773d258cea3f937a8429cf0f6f0f060c281fd8eb6d5c7c", 202277, 1, 1244),
    TaskSpec("repetitive-algebra", CLASSIFICATION, "repetitive-algebra_classification.jsonl",
             "c2496c285bfef9e8da82dd28026aeb35f834da1c20ea410540c82698526428f3", 740039, 2, 1000,
             demos_in_prompt=True),
    TaskSpec("resisting-correction", CLASSIFICATION, "resisting-correction_classification.jsonl",
             "0c2720f095a4272e6b1462fe774704c57db0f124c4b68f35747d76e79e5352f6", 3572356, 1, 7344,
             changed_after_evaluation=True),
    TaskSpec("sig-figs", CLASSIFICATION, "sig-figs_classification.jsonl",
             "19ca4afdd2b5d0fb2608097cf747b5a4105038ea2183750796c8bf57f23e7448", 15047173, 2, 20897),
)

_BY_NAME = {t.name: t for t in TASKS}
_BY_NAME.update({t.seqio_name: t for t in TASKS})
_BY_FILE = {t.filename: t for t in TASKS}


def get(name: str) -> TaskSpec:
  """Looks a task up by release name ("memo-trap") or SeqIO name ("memo_trap")."""
  try:
    return _BY_NAME[name]
  except KeyError:
    raise KeyError(f"unknown task {name!r}; known: {', '.join(t.name for t in TASKS)}") from None


def by_filename(filename: str) -> TaskSpec | None:
  """The task whose official file has this base name, or None."""
  return _BY_FILE.get(filename)


def classification_tasks() -> tuple[TaskSpec, ...]:
  return tuple(t for t in TASKS if t.metric == CLASSIFICATION)
