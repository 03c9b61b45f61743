"""Per-example metrics: pure functions of the records of one run (the prize's definitions).

Classification (CLASS records, one per class of an example): with s_i = log p(class_i |
prompt) summed over the class tokens,
  accuracy       1 if argmax_i s_i == answer_index else 0. When classes tie for the
                 maximum (exact float equality), rule "argmax" (the default) gives the tie
                 to the lowest class index, as `np.argmax` in the prize's code did (so
                 published numbers reproduce; it favours answer 0); rule "fractional"
                 scores a k-way tie that includes the answer 1/k, the expected score of
                 breaking the tie uniformly at random.
  loss           -log softmax(s)[answer] = logsumexp(s) - s[answer]
  total_logprob  logsumexp(s): the log of the probability mass on the classes
Sequence probability (SEQUENCE records): loss = -log p(completion | prompt), summed over
the completion tokens. Chain of thought (GENERATION records): accuracy = is_correct, with
an unparseable answer (parsed == False) scored wrong; loss and total_logprob only when the
run also has every class's CLASS record for every example.

Length-normalised extras (never the default): `_per_token` / `_per_byte` metrics divide
each score by its target's token / UTF-8 byte count before the same formulas.
Chance: accuracy 1/n_classes and loss log(n_classes), averaged over the examples.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Mapping, Sequence

import numpy as np

from invscale_jax import records as records_lib
from invscale_jax.report.errors import ReportError

NORMALISATIONS = ("token", "byte")
TIE_RULES = ("argmax", "fractional")
DEFAULT_TIES = "argmax"  # the prize's rule


@dataclasses.dataclass(frozen=True)
class MetricInfo:
  higher_is_better: bool | None  # None: a diagnostic, drawn and tabled but never labelled
  description: str


METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo(True, "argmax of the class log-probabilities is the answer"),
    "loss": MetricInfo(False, "-log softmax(class log-probabilities)[answer]; sequence "
                       "tasks: -log p(completion)"),
    "total_logprob": MetricInfo(None, "log of the probability mass on the classes"),
    "tie_rate": MetricInfo(None, "share of examples whose best class score is tied"),
    "unparseable_rate": MetricInfo(None, "chain of thought: share of answers that could not "
                                   "be parsed (scored wrong)"),
}
for _norm in NORMALISATIONS:
  METRICS[f"accuracy_per_{_norm}"] = MetricInfo(True, f"accuracy on per-{_norm} scores")
  METRICS[f"loss_per_{_norm}"] = MetricInfo(False, f"loss on per-{_norm} scores")


@dataclasses.dataclass(frozen=True)
class ExampleMetrics:
  """Per-example values of one run, aligned with the sorted `example_ids`."""

  example_ids: np.ndarray  # (n,) int
  values: Mapping[str, np.ndarray]  # metric -> (n,) float
  chance: Mapping[str, float]  # metric -> chance level averaged over the examples
  answers: np.ndarray | None  # (n,) answer_index, None for sequence tasks
  n_classes: np.ndarray | None  # (n,), None for sequence tasks
  n_dropped: int = 0  # examples left out because some of their class records are missing
  predicted: np.ndarray | None = None  # (n,) class chosen (argmax; CoT: parsed, -1: none)

  def select(self, example_ids: np.ndarray) -> "ExampleMetrics":
    """The same metrics on `example_ids` only (a sorted subset of this run's examples)."""
    keep = np.isin(self.example_ids, example_ids)
    pick = lambda a: None if a is None else a[keep]
    values = {k: v[keep] for k, v in self.values.items()}
    chance = ({} if self.n_classes is None or not keep.any()
              else _chance(values, self.n_classes[keep]))
    return dataclasses.replace(self, example_ids=self.example_ids[keep], values=values,
                               chance=chance, answers=pick(self.answers),
                               n_classes=pick(self.n_classes), predicted=pick(self.predicted))


@dataclasses.dataclass(frozen=True)
class ClassScores:
  """Class scores of complete examples; absent classes are padded with -inf."""

  example_ids: np.ndarray  # (n,)
  logprobs: np.ndarray  # (n, max_classes)
  n_tokens: np.ndarray  # (n, max_classes), 1 where padded
  n_bytes: np.ndarray  # (n, max_classes), 1 where padded
  n_classes: np.ndarray  # (n,)
  answers: np.ndarray  # (n,)
  n_dropped: int


def logsumexp(scores: np.ndarray) -> np.ndarray:
  top = scores.max(axis=1)
  return top + np.log(np.exp(scores - top[:, None]).sum(axis=1))


def accuracy(scores: np.ndarray, answers: np.ndarray, ties: str = DEFAULT_TIES) -> np.ndarray:
  """Per-example accuracy. A tie at the top goes to the lowest class index ("argmax"), or
  scores 1/k when k classes tie and the answer is one of them ("fractional")."""
  if ties == "argmax":
    return (np.argmax(scores, axis=1) == answers).astype(float)
  if ties != "fractional":
    raise ValueError(f"ties: {ties!r} is not one of {', '.join(TIE_RULES)}")
  at_top = scores == scores.max(axis=1, keepdims=True)
  return at_top[np.arange(len(answers)), answers] / at_top.sum(axis=1)


def tied(scores: np.ndarray) -> np.ndarray:
  return ((scores == scores.max(axis=1, keepdims=True)).sum(axis=1) > 1).astype(float)


def classification_loss(scores: np.ndarray, answers: np.ndarray) -> np.ndarray:
  return logsumexp(scores) - scores[np.arange(len(answers)), answers]


def class_scores(records: Sequence[records_lib.Record], strict: bool = True) -> ClassScores:
  """Groups CLASS records by example; an incomplete example raises if `strict`, else is dropped."""
  by_id: dict[int, list[records_lib.Record]] = collections.defaultdict(list)
  for r in records:
    by_id[r.example_id].append(r)
  complete, dropped = [], 0
  for example_id in sorted(by_id):
    recs = sorted(by_id[example_id], key=lambda r: r.class_index)
    n, answer = recs[0].n_classes, recs[0].answer_index
    indices = [r.class_index for r in recs]
    if any(r.n_classes != n or r.answer_index != answer for r in recs):
      raise ReportError(f"example {example_id}: class records disagree on n_classes or "
                        "answer_index")
    if answer is None or not 0 <= answer < n or len(set(indices)) != len(indices) or any(
        i is None or not 0 <= i < n for i in indices):
      raise ReportError(f"example {example_id}: bad class_index/answer_index "
                        f"(classes {indices}, answer {answer}, n_classes {n})")
    if any(r.logprob is None for r in recs):
      raise ReportError(f"example {example_id}: class record without logprob")
    if len(recs) < n:
      if strict:
        raise ReportError(f"example {example_id}: {len(recs)} of {n} class records")
      dropped += 1
      continue
    complete.append(recs)
  width = max((len(recs) for recs in complete), default=1)
  shape = (len(complete), width)
  logprobs, n_tokens, n_bytes = np.full(shape, -np.inf), np.ones(shape), np.ones(shape)
  for row, recs in enumerate(complete):
    for r in recs:
      logprobs[row, r.class_index] = r.logprob
      n_tokens[row, r.class_index] = max(r.n_tokens, 1)
      n_bytes[row, r.class_index] = max(r.n_bytes, 1)
  return ClassScores(
      example_ids=np.array([recs[0].example_id for recs in complete], dtype=int),
      logprobs=logprobs, n_tokens=n_tokens, n_bytes=n_bytes,
      n_classes=np.array([recs[0].n_classes for recs in complete], dtype=int),
      answers=np.array([recs[0].answer_index for recs in complete], dtype=int),
      n_dropped=dropped)


def _normalised(cs: ClassScores, norm: str) -> np.ndarray:
  return cs.logprobs / (cs.n_tokens if norm == "token" else cs.n_bytes)


def _class_values(cs: ClassScores, normalise: Sequence[str], with_accuracy: bool,
                  ties: str = DEFAULT_TIES) -> dict[str, np.ndarray]:
  values = {"loss": classification_loss(cs.logprobs, cs.answers),
            "total_logprob": logsumexp(cs.logprobs)}
  if with_accuracy:
    values["accuracy"] = accuracy(cs.logprobs, cs.answers, ties)
    values["tie_rate"] = tied(cs.logprobs)
  for norm in normalise:
    scores = _normalised(cs, norm)
    values[f"loss_per_{norm}"] = classification_loss(scores, cs.answers)
    if with_accuracy:
      values[f"accuracy_per_{norm}"] = accuracy(scores, cs.answers, ties)
  return values


def _chance(values: Mapping[str, np.ndarray], n_classes: np.ndarray) -> dict[str, float]:
  chance = {}
  for name in values:
    if name.startswith("accuracy"):
      chance[name] = float(np.mean(1.0 / n_classes))
    elif name.startswith("loss"):
      chance[name] = float(np.mean(np.log(n_classes)))
  return chance


def _one_per_example(records: Sequence[records_lib.Record]) -> list[records_lib.Record]:
  by_id = {}
  for r in records:
    if r.example_id in by_id:
      raise ReportError(f"example {r.example_id}: two {r.kind} records")
    by_id[r.example_id] = r
  return [by_id[i] for i in sorted(by_id)]


def _sequence_metrics(records, normalise) -> ExampleMetrics:
  recs = _one_per_example(records)
  if any(r.logprob is None for r in recs):
    raise ReportError("sequence record without logprob")
  logprob = np.array([r.logprob for r in recs], dtype=float)
  values = {"loss": -logprob}
  for norm in normalise:
    size = np.array([max(r.n_tokens if norm == "token" else r.n_bytes, 1) for r in recs])
    values[f"loss_per_{norm}"] = -logprob / size
  ids = np.array([r.example_id for r in recs], dtype=int)
  return ExampleMetrics(ids, values, {}, None, None)


def _generation_metrics(records, normalise) -> ExampleMetrics:
  gens = _one_per_example([r for r in records if r.kind == records_lib.GENERATION])
  ids = np.array([r.example_id for r in gens], dtype=int)
  n_classes = np.array([r.n_classes for r in gens], dtype=int)
  values = {
      "accuracy": np.array([float(bool(r.is_correct) and r.parsed is not False) for r in gens]),
      "unparseable_rate": np.array([float(r.parsed is False) for r in gens]),
  }
  cs = class_scores([r for r in records if r.kind == records_lib.CLASS], strict=False)
  if np.array_equal(cs.example_ids, ids):
    values.update(_class_values(cs, normalise, with_accuracy=False))
  if any(r.answer_index is None for r in gens):
    raise ReportError("generation record without answer_index")
  answers = np.array([r.answer_index for r in gens], dtype=int)
  predicted = np.array([-1 if r.parsed is False or r.class_index is None else r.class_index
                        for r in gens], dtype=int)
  return ExampleMetrics(ids, values, _chance(values, n_classes), answers, n_classes,
                        predicted=predicted)


def example_metrics(records: Sequence[records_lib.Record], normalise: Sequence[str] = (),
                    strict: bool = True, ties: str = DEFAULT_TIES) -> ExampleMetrics:
  """Per-example metrics of one run's records (all of one model, task and variant).

  `strict`: an example missing some class records raises (a COMPLETE run); otherwise it
  is dropped and counted in `n_dropped` (a run still being written), which may leave
  no examples at all. `ties`: how accuracy breaks a tie for the top class score.
  """
  kinds = {r.kind for r in records}
  if not records:
    raise ReportError("no records")
  if kinds == {records_lib.SEQUENCE}:
    return _sequence_metrics(records, normalise)
  if kinds == {records_lib.CLASS}:
    cs = class_scores(records, strict)
    values = _class_values(cs, normalise, with_accuracy=True, ties=ties)
    return ExampleMetrics(cs.example_ids, values, _chance(values, cs.n_classes), cs.answers,
                          cs.n_classes, cs.n_dropped, np.argmax(cs.logprobs, axis=1))
  if records_lib.GENERATION in kinds and kinds <= {records_lib.GENERATION, records_lib.CLASS}:
    return _generation_metrics(records, normalise)
  raise ReportError(f"cannot mix record kinds {sorted(kinds)} in one run")
