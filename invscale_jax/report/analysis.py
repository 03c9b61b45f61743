"""The report's numbers as one pure function: runs (+ external points) -> `Analysis`.

runs -> per-example metrics -> curves per (family, task, variant, metric) and their
average over the classification tasks -> shape labels; plus coverage and class balance.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

from invscale_jax import catalog, task_registry
from invscale_jax import family as family_lib
from invscale_jax.report import coverage
from invscale_jax.report import curves as curves_lib
from invscale_jax.report import metrics as metrics_lib
from invscale_jax.report import shapes
from invscale_jax.report.errors import ReportError
from invscale_jax.report.external import AVERAGE, ExternalPoint
from invscale_jax.report.load import Run

COMPUTE, N_PARAMS = "compute", "n_params"
AXES = ("auto", COMPUTE, N_PARAMS)


@dataclasses.dataclass(frozen=True)
class Options:
  metric: str = "accuracy"  # the metric plotted and tabled first
  normalise: tuple[str, ...] = ()  # extra length-normalised metrics: "token", "byte"
  resamples: int = 1000
  seed: int = 0
  alpha: float = 0.05
  margin: float = 0.02
  axis: str = "auto"  # "auto", "compute" or "n_params"
  ties: str = metrics_lib.DEFAULT_TIES  # accuracy's tie rule: "argmax" or "fractional"


@dataclasses.dataclass(frozen=True)
class Average:
  family: str
  variant: str
  metric: str
  tasks: tuple[str, ...]  # tasks averaged
  left_out: dict[str, str]  # task -> why it is not in the average


@dataclasses.dataclass(frozen=True)
class TieCount:
  """How many examples of a classification run have their top class score tied."""

  family: str
  model: str
  task: str
  variant: str
  tied: int
  n_examples: int


@dataclasses.dataclass(frozen=True)
class Analysis:
  options: Options
  axis: str  # COMPUTE or N_PARAMS
  curves: tuple[curves_lib.Curve, ...]
  shapes: dict[tuple[str, str, str, str], shapes.Shape]  # (family, task, variant, metric)
  averages: tuple[Average, ...]
  externals: tuple[ExternalPoint, ...]  # the ones that can be drawn on this axis
  class_balance: dict[str, coverage.Balance]
  missing: tuple[str, ...]
  ties: tuple[TieCount, ...]  # per classification run


def variant_order(variant: str) -> tuple[int, str]:
  """zero-shot first, then other non-CoT variants, then chain of thought."""
  return (0 if variant == "zero_shot" else 2 if "cot" in variant else 1, variant)


def task_order(task: str) -> tuple[int, str]:
  """Prize tasks in the catalog's order, then your own tasks by name."""
  names = [t.name for t in catalog.TASKS]
  return (names.index(task) if task in names else len(names), task)


def choose_axis(entries: Sequence[family_lib.ModelEntry], externals: Sequence[ExternalPoint],
                requested: str) -> str:
  """Compute when every model has it (or as requested), else parameters."""
  no_compute = sorted({e.name for e in entries if e.compute is None}
                      | {p.model for p in externals if p.compute is None})
  no_params = sorted({e.name for e in entries if e.n_params is None})
  if requested == COMPUTE or (requested == "auto" and not no_compute):
    if no_compute:
      raise ReportError(f"no training compute for {', '.join(no_compute)}: give train_flops "
                        "or n_params and train_tokens in a --family manifest")
    return COMPUTE
  if no_params:
    raise ReportError(f"neither compute nor n_params for {', '.join(no_params)}: give them "
                      "in a --family manifest")
  return N_PARAMS


def _check_resamples(n_steps: int, options: Options) -> None:
  """The smallest bootstrap p-value, 2/(B+1), must pass Holm's strictest threshold."""
  if n_steps and 2 / (options.resamples + 1) > options.alpha / n_steps:
    need = int(2 * n_steps / options.alpha)
    raise ReportError(f"--resamples {options.resamples} is too few to find any step "
                      f"significant on a curve with {n_steps} steps; use at least {need}")


def _scores(runs: Sequence[Run], options: Options):
  """Per-run example metrics, skipping runs with nothing scored yet."""
  scored = []
  for run in runs:
    if not run.records:
      continue
    try:
      em = metrics_lib.example_metrics(run.records, options.normalise, strict=run.complete,
                                       ties=options.ties)
    except ReportError as e:
      raise ReportError(f"{run.path}: {e}") from None
    kind = task_registry.get(run.task).metric
    if (kind == catalog.SEQUENCE_PROBABILITY) != (em.answers is None):
      raise ReportError(f"{run.path}: {run.task} is a {kind} task "
                        "but the run has records of another kind")
    scored.append((run, em))
  return scored


def _answers(scored) -> dict[str, dict[int, tuple[int, int]]]:
  answers: dict[str, dict[int, tuple[int, int]]] = collections.defaultdict(dict)
  where: dict[tuple[str, int], str] = {}
  for run, em in scored:
    if em.answers is None:
      continue
    for i, a, n in zip(em.example_ids.tolist(), em.answers.tolist(), em.n_classes.tolist()):
      seen = answers[run.task].setdefault(i, (a, n))
      where.setdefault((run.task, i), run.path)
      if seen != (a, n):
        raise ReportError(f"{run.task} example {i}: answer_index/n_classes differ between "
                          f"{where[(run.task, i)]} and {run.path} (different data?)")
  return answers


def _averages(family: str, variant: str, draws: dict, alpha: float):
  """Average curves over the prize classification tasks that every model of the curve has
  (your own tasks are never averaged in)."""
  classification = {t.name for t in catalog.classification_tasks()}
  out = []
  for metric, info in metrics_lib.METRICS.items():
    if info.higher_is_better is None:
      continue
    parts = {task: d for (f, task, v, m), d in draws.items()
             if (f, v, m) == (family, variant, metric) and task in classification}
    if not parts:
      continue
    models = sorted({m.name for d in parts.values() for m in d.models})
    included, left_out = [], {}
    for task in sorted(parts, key=task_order):
      lacking = [m for m in models if m not in {i.name for i in parts[task].models}]
      if lacking:
        left_out[task] = f"no {metric} for {', '.join(lacking)}"
      else:
        included.append(task)
    if included:
      d = curves_lib.average_draws([parts[t] for t in included])
      out.append((curves_lib.summarise(family, AVERAGE, variant, metric, d, alpha, included),
                  Average(family, variant, metric, tuple(included), left_out)))
  return out


def analyse(runs: Sequence[Run], externals: Sequence[ExternalPoint] = (),
            manifests: Sequence[family_lib.Family] = (), options: Options = Options()) -> Analysis:
  """Every number of the report; bad input raises ReportError."""
  if options.metric not in metrics_lib.METRICS:
    raise ReportError(f"unknown metric {options.metric!r}")
  if options.resamples < 10 or not 0 < options.alpha < 0.5 or options.margin < 0:
    raise ReportError("need resamples >= 10, 0 < alpha < 0.5 and margin >= 0")
  if options.axis not in AXES or any(n not in metrics_lib.NORMALISATIONS
                                     for n in options.normalise):
    raise ReportError(f"axis must be one of {AXES}; normalise one of "
                      f"{metrics_lib.NORMALISATIONS}")
  if options.ties not in metrics_lib.TIE_RULES:
    raise ReportError(f"ties must be one of {metrics_lib.TIE_RULES}")
  axis = choose_axis([r.model for r in runs], externals, options.axis)
  scored = _scores(runs, options)
  groups = collections.defaultdict(list)
  for run, em in scored:
    if len(em.example_ids):
      x = run.model.compute if axis == COMPUTE else run.model.n_params
      info = curves_lib.ModelInfo(run.model.name, run.model.compute, run.model.n_params,
                                  float(x), run.complete)
      groups[(run.family, run.task, run.variant)].append(curves_lib.ModelScores(info, em))
  draws = {}
  for (fam, task, variant), models in groups.items():
    for metric, d in curves_lib.task_draws(fam, task, variant, models, options.resamples,
                                           options.seed).items():
      draws[(fam, task, variant, metric)] = d
  _check_resamples(max((len(d.step_values) for d in draws.values()), default=0), options)
  curves = [curves_lib.summarise(*key, d, options.alpha) for key, d in draws.items()]
  averages = []
  for fam, variant in sorted({(k[0], k[2]) for k in draws}):
    for curve, average in _averages(fam, variant, draws, options.alpha):
      curves.append(curve)
      averages.append(average)
  curves.sort(key=lambda c: (c.family, task_order(c.task), variant_order(c.variant), c.metric))
  labels = {}
  for c in curves:
    shape = shapes.label(c, options.alpha, options.margin)
    if shape is not None:
      labels[(c.family, c.task, c.variant, c.metric)] = shape
  drawn = [p for p in externals if (p.compute if axis == COMPUTE else p.n_params) is not None]
  missing = coverage.missing_runs(runs, manifests)
  missing += coverage.partial_runs(
      runs, {r.path: (len(em.example_ids), em.n_dropped) for r, em in scored})
  missing += [f"average {a.family} {a.variant} {a.metric}: left out {t} ({why})"
              for a in averages for t, why in a.left_out.items()]
  missing += [f"{p.source}: not drawn (no n_params for the parameter axis)"
              for p in externals if p not in drawn]
  ties = sorted((TieCount(run.family, run.model.name, run.task, run.variant,
                           int(em.values["tie_rate"].sum()), len(em.example_ids))
                  for run, em in scored if "tie_rate" in em.values),
                 key=lambda t: (t.family, task_order(t.task), variant_order(t.variant),
                                t.model))
  return Analysis(options=options, axis=axis, curves=tuple(curves), shapes=labels,
                  averages=tuple(averages), externals=tuple(drawn),
                  class_balance=coverage.class_balance(_answers(scored)),
                  missing=tuple(missing), ties=tuple(ties))
