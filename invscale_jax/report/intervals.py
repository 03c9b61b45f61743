"""Closed-form 95% intervals of a mean, for one run's headline number (`invscale results`).

The report uses bootstrap intervals (`bootstrap`); the results table needs something
instant: Wilson's score interval when every value is 0 or 1 (accuracy; it stays inside
[0, 1] and is not empty at 0% or 100%), else the normal interval mean +/- z SE.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054


def mean_interval(values: np.ndarray, z: float = Z95) -> tuple[float, float]:
  """(low, high) of the mean of `values` at the confidence level of `z` (default 95%)."""
  values = np.asarray(values, dtype=float)
  n = len(values)
  if not n:
    return math.nan, math.nan
  mean = float(values.mean())
  if np.isin(values, (0.0, 1.0)).all():
    centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
  se = float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
  return mean - z * se, mean + z * se
