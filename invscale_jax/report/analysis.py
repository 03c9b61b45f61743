"""The report's numbers as one pure function: runs (+ external points) -> `Analysis`.

runs -> per-example metrics -> curves per (family, task, variant, metric) and their
average over the classification tasks -> shape labels; plus coverage and class balance.
The models of one curve are compared on the examples all of them have (a `--limit` run
beside full runs), curves without signal are labelled so (`shapes.no_signal`), and every
curve carries notes: its runs' caveats (`caveats`), what an average averages, and models
whose runs used different checkpoints under one name.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Sequence

import numpy as np

from invscale_jax import caveats as caveats_lib
from invscale_jax import catalog, task_registry
from invscale_jax import family as family_lib
from invscale_jax.report import coverage
from invscale_jax.report import curves as curves_lib
from invscale_jax.report import metrics as metrics_lib
from invscale_jax.report import seeds as seeds_lib
from invscale_jax.report import shapes
from invscale_jax.report.errors import ReportError
from invscale_jax.report.external import AVERAGE, ExternalPoint
from invscale_jax.report.load import Run

COMPUTE, N_PARAMS = "compute", "n_params"
AXES = ("auto", COMPUTE, N_PARAMS)
RESAMPLES = (10, 1_000_000)  # the bounds of Options.resamples
DRAWS_BYTES = 4 << 30  # the most memory the bootstrap draws of one report may take


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
class RunNote:
  """What one run's numbers are besides numbers: its setup and caveats (from run.json)."""

  family: str
  model: str
  task: str
  variant: str
  run_key: str
  setup: str  # dtype and prompt conventions, e.g. "fp32, BOS 0"
  notes: tuple[str, ...]  # subset, truncation, untrained (`caveats.notes`)
  marked: bool  # a subset or truncated prompts: an open marker on the plot
  caveats: caveats_lib.RunCaveats | None  # the figures behind `setup` and `notes`


@dataclasses.dataclass(frozen=True)
class MixedModel:
  """One model name whose runs used different checkpoints (or networks, vocabularies)."""

  family: str
  model: str
  runs: tuple[tuple[str, str, str], ...]  # (identity, task, variant) of each run

  def text(self) -> str:
    by_id = collections.defaultdict(list)
    for identity, task, variant in self.runs:
      by_id[identity].append(f"{task}.{variant}")
    return (f"{self.family}/{self.model}: {len(by_id)} different checkpoints under one name ("
            + "; ".join(f"{i}: {', '.join(w)}" for i, w in sorted(by_id.items())) + ")")


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
  runs: tuple[RunNote, ...] = ()  # every run with something scored
  mixed: tuple[MixedModel, ...] = ()  # models with several checkpoints across runs
  identities: dict[tuple[str, str, str, str], str] = dataclasses.field(
      default_factory=dict)  # (family, model, task, variant) -> model identity
  seed_groups: tuple[seeds_lib.SeedCurve, ...] = ()  # means over the seeds of one design


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


def _check_draws_memory(groups: Iterable[Sequence[curves_lib.ModelScores]],
                        resamples: int) -> None:
  """Refuses, before drawing, `resamples` whose draws would not fit in DRAWS_BYTES: each
  curve keeps resamples floats per model and per step, held twice while they are built."""
  rows = sum(len(m.metrics.values) * 2 for models in groups for m in models)
  need = 2 * 8 * resamples * rows
  if need > DRAWS_BYTES:
    raise ReportError(f"--resamples {resamples}: the bootstrap draws of these runs would take "
                      f"about {need / 2**30:.1f} GiB (at most {DRAWS_BYTES / 2**30:g} GiB); "
                      f"use at most {resamples * DRAWS_BYTES // need}")


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


def _comparable(key: tuple[str, str, str], members: list) -> tuple[list, list[str]]:
  """The members (run, metrics) of one (family, task, variant) restricted to the examples
  every one of them was scored on, and a note when that left any out: a `--limit` run
  and full runs of other models are compared on the same examples, never drawn as one
  curve over different example sets."""
  ids = [set(em.example_ids.tolist()) for _, em in members]
  if all(i == ids[0] for i in ids):
    return members, []
  common = np.array(sorted(set.intersection(*ids)), dtype=int)
  if not len(common):
    raise ReportError(f"{' '.join(key)}: no example was scored for every model ("
                      + ", ".join(f"{r.model.name}: {len(i)}" for (r, _), i in zip(members, ids))
                      + "); report them separately")
  more = [f"{r.model.name} {len(i)}" for (r, _), i in zip(members, ids) if len(i) > len(common)]
  note = (f"every point uses the {len(common)} examples all models were scored on "
          f"(left out: the rest of {', '.join(more)})")
  return [(run, em.select(common)) for run, em in members], [note]


def _grouped_notes(members) -> list[str]:
  """Each run caveat once, with the models it applies to."""
  by_text: dict[str, list[str]] = collections.defaultdict(list)
  for run, _ in members:
    for text in caveats_lib.notes(run.caveats) if run.caveats else ():
      by_text[text].append(run.model.name)
  return [f"{text} ({'every model' if len(names) == len(members) else ', '.join(names)})"
          for text, names in by_text.items()]


def _model_reason(run: Run, em: metrics_lib.ExampleMetrics, metric: str) -> str | None:
  unparseable = em.values.get("unparseable_rate")
  return shapes.model_no_signal(
      metric, run.caveats.trained if run.caveats else None,
      None if unparseable is None or not len(unparseable) else float(unparseable.mean()),
      em.predicted)


def _signal_notes(reasons: dict[str, str | None], curve_reason: str | None) -> list[str]:
  """Models without a signal on a curve that still has a shape."""
  if curve_reason:
    return []
  return [f"{m}: no signal ({r})" for m, r in reasons.items() if r]


@dataclasses.dataclass
class _Curves:
  """What `analyse` gathers per curve key (family, task, variant, metric)."""

  draws: dict = dataclasses.field(default_factory=dict)
  notes: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(list))
  reasons: dict = dataclasses.field(default_factory=dict)  # key -> {model: reason}


def _averages(family: str, variant: str, found: _Curves, identities: dict, alpha: float):
  """Average curves over the prize classification tasks that every model of the curve has
  (your own tasks are never averaged in)."""
  classification = {t.name for t in catalog.classification_tasks()}
  out = []
  for metric, info in metrics_lib.METRICS.items():
    if info.higher_is_better is None:
      continue
    parts = {task: d for (f, task, v, m), d in found.draws.items()
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
    if not included:
      continue
    d = curves_lib.average_draws([parts[t] for t in included])
    keys = [(family, t, variant, metric) for t in included]
    reasons = {}
    for m in d.models:
      why = {found.reasons[k].get(m.name) for k in keys}
      reasons[m.name] = (None if None in why else why.pop() if len(why) == 1
                         else "none on any averaged task")
    curve_reason = shapes.no_signal(list(reasons.values()), list(reasons))
    notes = [f"average of {len(included)} task(s) at every point: {', '.join(included)}"]
    notes += [f"{t}: {n}" for k, t in zip(keys, included) for n in found.notes[k]]
    mixed = []
    for m in d.models:
      ids = {identities.get((family, m.name, t, variant), "") for t in included} - {""}
      if len(ids) > 1:
        mixed.append(m.name)
        notes.append(f"{m.name}: the averaged tasks were scored with {len(ids)} different "
                     "checkpoints of this name")
    notes += _signal_notes(reasons, curve_reason)
    curve = dataclasses.replace(curves_lib.summarise(family, AVERAGE, variant, metric, d, alpha,
                                                     included, notes), mixed=tuple(mixed))
    out.append((curve, curve_reason, Average(family, variant, metric, tuple(included),
                                             left_out)))
  return out


def _mixed(runs: Sequence[Run]) -> list[MixedModel]:
  """Models whose runs (across tasks and variants) used different checkpoints."""
  seen = collections.defaultdict(list)
  for r in runs:
    if r.identity:
      seen[(r.family, r.model.name)].append((r.identity, r.task, r.variant))
  return [MixedModel(fam, model, tuple(sorted(found, key=lambda x: (task_order(x[1]), x[2]))))
          for (fam, model), found in sorted(seen.items())
          if len({identity for identity, _, _ in found}) > 1]


def _run_note(run: Run) -> RunNote:
  c = run.caveats
  return RunNote(run.family, run.model.name, run.task, run.variant, run.run_key,
                 caveats_lib.setup(c) if c else "?",
                 tuple(caveats_lib.notes(c)) if c else (), bool(c and c.marked), c)


def analyse(runs: Sequence[Run], externals: Sequence[ExternalPoint] = (),
            manifests: Sequence[family_lib.Family] = (), options: Options = Options()) -> Analysis:
  """Every number of the report; bad input raises ReportError."""
  if options.metric not in metrics_lib.METRICS:
    raise ReportError(f"unknown metric {options.metric!r}")
  if (not RESAMPLES[0] <= options.resamples <= RESAMPLES[1] or not 0 < options.alpha < 0.5
      or not 0 <= options.margin <= 1):  # also False for NaN
    raise ReportError(f"need {RESAMPLES[0]} <= resamples <= {RESAMPLES[1]}, 0 < alpha < 0.5 "
                      f"and 0 <= margin <= 1, got {options.resamples}, {options.alpha}, "
                      f"{options.margin}")
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
      groups[(run.family, run.task, run.variant)].append((run, em))
  built = {}
  for key, members in groups.items():
    members, restricted = _comparable(key, members)
    models = []
    for run, em in members:
      x = run.model.compute if axis == COMPUTE else run.model.n_params
      c = run.caveats
      notes = tuple(caveats_lib.notes(c)) if c else ()
      if restricted:
        notes += (f"on the {len(em.example_ids)} examples all models have",)
      info = curves_lib.ModelInfo(run.model.name, run.model.compute, run.model.n_params,
                                  float(x), run.complete, bool(restricted or c and c.marked),
                                  notes)
      models.append(curves_lib.ModelScores(info, em))
    built[key] = (members, restricted, models)
  _check_draws_memory([models for _, _, models in built.values()], options.resamples)
  found = _Curves()
  for (fam, task, variant), (members, restricted, models) in built.items():
    by_model = {run.model.name: (run, em) for run, em in members}
    for metric, d in curves_lib.task_draws(fam, task, variant, models, options.resamples,
                                           options.seed).items():
      key = (fam, task, variant, metric)
      found.draws[key] = d
      found.reasons[key] = {m.name: _model_reason(*by_model[m.name], metric) for m in d.models}
      found.notes[key] = restricted + _grouped_notes(members)
  _check_resamples(max((len(d.step_values) for d in found.draws.values()), default=0), options)
  no_signal = {k: shapes.no_signal(list(r.values()), list(r)) for k, r in found.reasons.items()}
  curves = [curves_lib.summarise(*key, d, options.alpha, (), found.notes[key]
                                 + _signal_notes(found.reasons[key], no_signal[key]))
            for key, d in found.draws.items()]
  identities = {(r.family, r.model.name, r.task, r.variant): r.identity for r in runs}
  averages = []
  for fam, variant in sorted({(k[0], k[2]) for k in found.draws}):
    for curve, reason, average in _averages(fam, variant, found, identities, options.alpha):
      curves.append(curve)
      no_signal[(fam, AVERAGE, variant, curve.metric)] = reason
      averages.append(average)
  curves.sort(key=lambda c: (c.family, task_order(c.task), variant_order(c.variant), c.metric))
  labels = {}
  for c in curves:
    key = (c.family, c.task, c.variant, c.metric)
    shape = shapes.label(c, options.alpha, options.margin, no_signal.get(key))
    if shape is not None:
      labels[key] = shape
  seed_curves = seeds_lib.seed_curves(
      curves, {r.family: (r.seed_group, r.seed) for r in runs if r.seed_group is not None})
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
  notes = sorted((_run_note(run) for run, _ in scored),
                 key=lambda n: (n.family, task_order(n.task), variant_order(n.variant), n.model))
  return Analysis(options=options, axis=axis, curves=tuple(curves), shapes=labels,
                  averages=tuple(averages), externals=tuple(drawn),
                  class_balance=coverage.class_balance(_answers(scored)),
                  missing=tuple(missing), ties=tuple(ties), runs=tuple(notes),
                  mixed=tuple(_mixed(runs)), identities=identities,
                  seed_groups=tuple(seed_curves))
