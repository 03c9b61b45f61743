"""Seeds of one design: per model, the mean over the seed families' values, with a band.

Families whose manifests (and so run.json) give the same `seed_group` are training seeds
of one design (`invscale lab --seeds K`). Per (group, task, variant, metric) each model
that every seed family has, at the same x (compute or parameters), gets the mean of the
seeds' values and the band from the lowest to the highest seed (min-max: with a handful
of seeds it shows every seed, where an interval from their spread would rest on two or
three numbers). Other models are left out, and said so. Shapes stay per family: the
mean gets no statistical test of its own.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Mapping, Sequence

import numpy as np

from invscale_jax.report import curves as curves_lib

BAND = "min-max over seeds"


@dataclasses.dataclass(frozen=True)
class SeedPoint:
  model: str
  compute: float | None
  n_params: float | None
  x: float
  mean: float  # mean over the seeds of the model's value
  low: float  # the lowest seed's value
  high: float  # the highest seed's value
  n_seeds: int
  values: tuple[float, ...]  # each seed's value, in the order of SeedCurve.families


@dataclasses.dataclass(frozen=True)
class SeedCurve:
  group: str
  task: str
  variant: str
  metric: str
  families: tuple[str, ...]  # the group's families, by seed
  seeds: tuple[int, ...]
  points: tuple[SeedPoint, ...]
  left_out: tuple[str, ...] = ()  # models (or the whole curve) not averaged, and why
  band: str = BAND


def _left_out(model: str, found: Mapping[str, curves_lib.Point],
              families: Sequence[str]) -> str | None:
  """Why `model` is not averaged (None: it is in every family at one x)."""
  lacking = [f for f in families if f not in found]
  if lacking:
    return f"{model}: not in {', '.join(lacking)}"
  if len({p.x for p in found.values()}) > 1:
    xs = ", ".join(f"{f} {p.x:.3g}" for f, p in found.items())
    return f"{model}: its x differs across seeds ({xs})"
  return None


def _seed_curve(group: str, key: tuple[str, str, str], families: Sequence[str],
                seeds: Sequence[int], by_family: Mapping[str, curves_lib.Curve]) -> SeedCurve:
  task, variant, metric = key
  left_out = []
  if len({c.tasks for c in by_family.values()}) > 1:
    left_out.append("the seed families average different tasks; no mean")
    return SeedCurve(group, task, variant, metric, tuple(families), tuple(seeds), (),
                     tuple(left_out))
  models: dict[str, dict[str, curves_lib.Point]] = collections.defaultdict(dict)
  for fam, c in by_family.items():
    for p in c.points:
      models[p.model][fam] = p
  points = []
  for model, found in models.items():
    why = _left_out(model, found, families)
    if why:
      left_out.append(why)
      continue
    values = np.array([found[f].value for f in families], dtype=float)
    first = found[families[0]]
    points.append(SeedPoint(model, first.compute, first.n_params, first.x,
                            float(values.mean()), float(values.min()), float(values.max()),
                            len(values), tuple(float(v) for v in values)))
  points.sort(key=lambda p: (p.x, p.model))
  return SeedCurve(group, task, variant, metric, tuple(families), tuple(seeds),
                   tuple(points), tuple(left_out))


def seed_curves(curves: Sequence[curves_lib.Curve],
                groups: Mapping[str, tuple[str, int]]) -> list[SeedCurve]:
  """The mean-over-seeds curves of every (group, task, variant, metric); `groups` maps a
  family to its (seed group, seed). A group needs at least two seed families."""
  members: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
  for fam, (group, seed) in groups.items():
    members[group].append((seed, fam))
  out = []
  for group, found in sorted(members.items()):
    if len(found) < 2:
      continue
    seeds, families = zip(*sorted(found))
    keyed: dict[tuple[str, str, str], dict[str, curves_lib.Curve]] = collections.defaultdict(dict)
    for c in curves:
      if c.family in families:
        keyed[(c.task, c.variant, c.metric)][c.family] = c
    out += [_seed_curve(group, key, families, seeds, by_family)
            for key, by_family in keyed.items()]
  return out
