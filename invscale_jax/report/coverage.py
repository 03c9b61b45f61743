"""What the results cover: missing runs and examples, and the class balance of each task."""

from __future__ import annotations

import collections
import dataclasses
from typing import Mapping, Sequence

import numpy as np

from invscale_jax import catalog
from invscale_jax import family as family_lib
from invscale_jax.report.load import Run

IMBALANCE = 0.10  # flag a task whose commonest answer exceeds the uniform share by this


@dataclasses.dataclass(frozen=True)
class Balance:
  n_examples: int
  shares: dict[int, float]  # answer_index -> share of examples
  uniform: float  # share of each answer if balanced: mean over examples of 1/n_classes
  majority: float  # accuracy of always giving the commonest answer index
  imbalanced: bool


def class_balance(answers: Mapping[str, Mapping[int, tuple[int, int]]]) -> dict[str, Balance]:
  """task -> {example_id: (answer_index, n_classes)} -> the share of each answer index."""
  out = {}
  for task in sorted(answers):
    pairs = np.array(list(answers[task].values()), dtype=int).reshape(-1, 2)
    if not len(pairs):
      continue
    index, counts = np.unique(pairs[:, 0], return_counts=True)
    shares = {int(i): float(c) / len(pairs) for i, c in zip(index, counts)}
    uniform = float(np.mean(1.0 / pairs[:, 1]))
    majority = max(shares.values())
    out[task] = Balance(len(pairs), shares, uniform, majority, majority > uniform + IMBALANCE)
  return out


def _names(items: Sequence[str]) -> str:
  return ", ".join(items)


def missing_runs(runs: Sequence[Run], manifests: Sequence[family_lib.Family]) -> list[str]:
  """Tasks never run, and (family, variant, task) cells lacking some of the family's models."""
  lines = []
  tasks = {r.task for r in runs}
  never = [t.name for t in catalog.TASKS if t.name not in tasks]
  if never:
    lines.append(f"{len(never)} of {len(catalog.TASKS)} tasks have no results: {_names(never)}")
  variants = sorted({r.variant for r in runs})
  from_manifest = {f.name: [m.name for m in f.models] for f in manifests}
  have = collections.defaultdict(set)
  for r in runs:
    have[(r.family, r.variant, r.task)].add(r.model.name)
  for fam in sorted({r.family for r in runs}):
    models = from_manifest.get(fam) or sorted({r.model.name for r in runs if r.family == fam})
    for variant in variants:
      for task in sorted(tasks):
        lacking = [m for m in models if m not in have[(fam, variant, task)]]
        if len(lacking) == len(models):
          lines.append(f"{fam} {variant} {task}: no runs")
        elif lacking:
          lines.append(f"{fam} {variant} {task}: no run for {_names(lacking)}")
  return lines


def partial_runs(runs: Sequence[Run], n_scored: Mapping[str, tuple[int, int]]) -> list[str]:
  """Runs not verified complete or with examples left out; n_scored: path -> (n, dropped)."""
  lines = []
  for r in sorted(runs, key=lambda r: (r.family, r.variant, r.task, r.model.name)):
    n, dropped = n_scored.get(r.path, (0, 0))
    name = f"{r.family}/{r.model.name} {r.variant} {r.task}"
    of = f" of {r.n_expected}" if r.n_expected is not None else ""
    if not r.complete:
      lines.append(f"{name}: incomplete ({r.problem}), {n}{of} examples scored "
                   f"(run {r.run_key})")
    elif r.n_expected is not None and n != r.n_expected:
      lines.append(f"{name}: COMPLETE but {n}{of} examples scored (run {r.run_key})")
    if dropped:
      lines.append(f"{name}: {dropped} examples left out (some class records not written)")
  return lines
