"""Scaling curves: one point per model with a bootstrap interval, and paired adjacent steps.

A curve is one (family, task, variant, metric). Models are ordered by the x axis. Each
point is the mean over the model's examples with a percentile interval from resampling
those examples; each step compares adjacent models on the examples both were scored on,
resampling the per-example differences (paired bootstrap). The average over tasks
averages the task means and, draw by draw, the task bootstrap draws (a bootstrap
stratified by task).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from invscale_jax.report import bootstrap
from invscale_jax.report import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  name: str
  compute: float | None
  n_params: float | None
  x: float  # position on the x axis (compute or n_params)
  complete: bool = True  # the run has its COMPLETE marker
  marked: bool = False  # a subset of the task's examples, or prompts cut to fit max_length
  notes: tuple[str, ...] = ()  # what the point is besides its number (`caveats.notes`)


@dataclasses.dataclass(frozen=True)
class ModelScores:
  info: ModelInfo
  metrics: metrics_lib.ExampleMetrics


@dataclasses.dataclass(frozen=True)
class Draws:
  """The numbers behind one curve: means and bootstrap draws of points and steps."""

  models: tuple[ModelInfo, ...]  # ordered by x
  values: np.ndarray  # (m,) means
  draws: np.ndarray  # (m, B)
  n_examples: np.ndarray  # (m,)
  chance: np.ndarray  # (m,), nan where there is no chance level
  step_values: np.ndarray  # (m-1,) mean of metric(larger) - metric(smaller), paired
  step_draws: np.ndarray  # (m-1, B)
  n_common: np.ndarray  # (m-1,) examples both models were scored on


@dataclasses.dataclass(frozen=True)
class Point:
  family: str
  model: str
  compute: float | None
  n_params: float | None
  x: float
  task: str
  variant: str
  metric: str
  value: float
  ci_low: float
  ci_high: float
  n_examples: int | None
  chance: float | None
  complete: bool = True
  marked: bool = False  # drawn with an open marker: a subset or truncated prompts
  notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Step:
  smaller: str
  larger: str
  n_common: int
  diff: float  # metric(larger) - metric(smaller) on the common examples
  ci_low: float  # (1 - alpha) interval
  ci_high: float
  eq_low: float  # (1 - 2 alpha) interval, for the equivalence ("flat") test
  eq_high: float
  p_value: float  # two-sided, not corrected for multiplicity


@dataclasses.dataclass(frozen=True)
class Curve:
  family: str
  task: str  # a task name, or "average"
  variant: str
  metric: str
  points: tuple[Point, ...]
  steps: tuple[Step, ...]
  tasks: tuple[str, ...] = ()  # the tasks averaged (average curves only)
  notes: tuple[str, ...] = ()  # what the curve's numbers are besides numbers (caveats)
  mixed: tuple[str, ...] = ()  # models scored with other checkpoints on other averaged tasks


def _model_draws(key: tuple[str, ...], model: ModelScores, names: Sequence[str],
                 resamples: int, seed: int) -> dict[str, np.ndarray]:
  matrix = np.stack([model.metrics.values[n] for n in names], axis=1)
  rng = bootstrap.rng_for(seed, *key, model.info.name)
  return dict(zip(names, bootstrap.resample_means(matrix, resamples, rng)))


def _pair_draws(key: tuple[str, ...], a: ModelScores, b: ModelScores, names: Sequence[str],
                resamples: int, seed: int) -> dict[str, tuple[int, float, np.ndarray]]:
  """metric -> (n_common, mean difference b - a, paired bootstrap draws of it)."""
  _, ia, ib = np.intersect1d(a.metrics.example_ids, b.metrics.example_ids,
                             assume_unique=True, return_indices=True)
  if not len(ia) or not names:
    return {n: (0, math.nan, np.full(resamples, math.nan)) for n in names}
  diff = np.stack([b.metrics.values[n][ib] - a.metrics.values[n][ia] for n in names], axis=1)
  rng = bootstrap.rng_for(seed, *key, a.info.name, b.info.name)
  draws = bootstrap.resample_means(diff, resamples, rng)
  return {n: (len(ia), float(diff[:, j].mean()), draws[j]) for j, n in enumerate(names)}


def task_draws(family: str, task: str, variant: str, models: Sequence[ModelScores],
               resamples: int, seed: int) -> dict[str, Draws]:
  """Draws of every metric the models have on one (family, task, variant)."""
  key = (family, task, variant)
  models = sorted(models, key=lambda m: (m.info.x, m.info.name))
  own = {m.info.name: _model_draws(key, m, [n for n in metrics_lib.METRICS
                                            if n in m.metrics.values], resamples, seed)
         for m in models}
  directional = [n for n, info in metrics_lib.METRICS.items()
                 if info.higher_is_better is not None]
  pairs: dict[tuple[str, str], dict] = {}
  out = {}
  for metric in metrics_lib.METRICS:
    ms = [m for m in models if metric in m.metrics.values]
    if not ms:
      continue
    steps = []
    if metric in directional:
      for a, b in zip(ms, ms[1:]):
        pair = (a.info.name, b.info.name)
        if pair not in pairs:
          names = [n for n in directional if n in a.metrics.values and n in b.metrics.values]
          pairs[pair] = _pair_draws(key, a, b, names, resamples, seed)
        steps.append(pairs[pair][metric])
    out[metric] = Draws(
        models=tuple(m.info for m in ms),
        values=np.array([m.metrics.values[metric].mean() for m in ms]),
        draws=np.stack([own[m.info.name][metric] for m in ms]),
        n_examples=np.array([len(m.metrics.example_ids) for m in ms]),
        chance=np.array([m.metrics.chance.get(metric, math.nan) for m in ms]),
        step_values=np.array([s[1] for s in steps]),
        step_draws=np.array([s[2] for s in steps]).reshape(len(steps), resamples),
        n_common=np.array([s[0] for s in steps], dtype=int))
  return out


def average_draws(parts: Sequence[Draws]) -> Draws:
  """The unweighted average over tasks; every part must have the same models in order."""
  models = parts[0].models
  if any([m.name for m in p.models] != [m.name for m in models] for p in parts):
    raise ValueError("averaged curves must have the same models")
  merged = tuple(dataclasses.replace(m, complete=all(p.models[i].complete for p in parts),
                                     marked=any(p.models[i].marked for p in parts), notes=())
                 for i, m in enumerate(models))

  def mean(field: str) -> np.ndarray:
    return np.mean([getattr(p, field) for p in parts], axis=0)

  return Draws(models=merged, values=mean("values"), draws=mean("draws"),
               n_examples=np.sum([p.n_examples for p in parts], axis=0),
               chance=mean("chance"), step_values=mean("step_values"),
               step_draws=mean("step_draws"),
               n_common=np.sum([p.n_common for p in parts], axis=0))


def _nan_to_none(value: float) -> float | None:
  return None if math.isnan(value) else float(value)


def summarise(family: str, task: str, variant: str, metric: str, d: Draws, alpha: float,
              tasks: Sequence[str] = (), notes: Sequence[str] = ()) -> Curve:
  """Points and steps with (1 - alpha) intervals; steps also get (1 - 2 alpha) intervals."""
  low, high = bootstrap.interval(d.draws, 1 - alpha)
  points = tuple(
      Point(family=family, model=m.name, compute=m.compute, n_params=m.n_params, x=m.x,
            task=task, variant=variant, metric=metric, value=float(d.values[i]),
            ci_low=float(low[i]), ci_high=float(high[i]), n_examples=int(d.n_examples[i]),
            chance=_nan_to_none(d.chance[i]), complete=m.complete, marked=m.marked,
            notes=m.notes)
      for i, m in enumerate(d.models))
  steps = []
  if len(d.step_values):
    s_low, s_high = bootstrap.interval(d.step_draws, 1 - alpha)
    e_low, e_high = bootstrap.interval(d.step_draws, 1 - 2 * alpha)
    p = bootstrap.p_value(d.step_draws)
    for i in range(len(d.step_values)):
      steps.append(Step(
          smaller=d.models[i].name, larger=d.models[i + 1].name, n_common=int(d.n_common[i]),
          diff=float(d.step_values[i]), ci_low=float(s_low[i]), ci_high=float(s_high[i]),
          eq_low=float(e_low[i]), eq_high=float(e_high[i]),
          p_value=float(p[i]) if np.isfinite(d.step_draws[i]).all() else 1.0))
  return Curve(family, task, variant, metric, points, tuple(steps), tuple(tasks), tuple(notes))
