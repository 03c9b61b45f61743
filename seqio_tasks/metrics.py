"""SeqIO score metrics: `(targets, scores)` functions, so `seqio.Evaluator` runs them.

`targets` are the postprocessed targets, one `(example_id, class_index, answer_index)` per
row; `scores` are the rows' summed log-probabilities. Rows are grouped by example here;
the definitions themselves are the report's (`invscale_jax.report.metrics`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from invscale_jax.report import metrics as report_metrics

Target = tuple[int, int, int]


def _by_example(targets: Sequence[Target], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  """Class log-probabilities [examples, max classes] (-inf where an example has fewer
  classes) and the answer of every example, in example order."""
  groups: dict[int, dict[int, float]] = {}
  answers: dict[int, int] = {}
  for (example_id, class_index, answer_index), score in zip(targets, scores):
    groups.setdefault(example_id, {})[class_index] = float(score)
    answers[example_id] = answer_index
  ids = sorted(groups)
  table = np.full((len(ids), max(len(g) for g in groups.values())), -np.inf)
  for row, e in enumerate(ids):
    for c, score in groups[e].items():
      table[row, c] = score
  return table, np.array([answers[e] for e in ids])


def accuracy(targets: Sequence[Target], scores: Sequence[float]) -> dict[str, float]:
  """Share of examples whose highest-scoring class is the answer (a tie goes to the lowest
  class index, as the prize's `np.argmax`: the report's default rule)."""
  return {"accuracy": float(np.mean(report_metrics.accuracy(*_by_example(targets, scores))))}


def classification_loss(targets: Sequence[Target], scores: Sequence[float]) -> dict[str, float]:
  """Mean of -log softmax(class log-probabilities)[answer] (the prize's loss)."""
  loss = report_metrics.classification_loss(*_by_example(targets, scores))
  return {"classification_loss": float(np.mean(loss))}


def sequence_loss(targets: Sequence[Target], scores: Sequence[float]) -> dict[str, float]:
  """Mean of -log p(completion | prompt) (prompt-injection's metric)."""
  del targets
  return {"sequence_loss": float(-np.mean(scores))}


CLASSIFICATION_METRICS = (accuracy, classification_loss)
SEQUENCE_METRICS = (sequence_loss,)
