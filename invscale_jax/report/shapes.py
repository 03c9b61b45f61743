"""Shape labels for scaling curves, decided by the rule in `RULE_MARKDOWN`.

Rule (for one curve: one family, task, prompt variant and metric; models ordered by the
x axis, K >= 2 of them):
1. Each adjacent step j (smaller -> larger model) has the paired difference d_j of the
   metric on the examples both models were scored on, oriented so that d_j > 0 means
   better (higher accuracy, lower loss), and a two-sided paired-bootstrap p-value
   p_j = min(1, 2 (1 + #{draws on the rarer side of 0}) / (B + 1)).
2. Holm's step-down correction over the K - 1 steps at level alpha (0.05): the chance of
   any false "significant" step in a curve is at most alpha.
3. The significant steps, read from small to large models with repeats merged, give a
   pattern: "+" -> positive, "-" -> inverse, "-+" -> U-shaped, "+-" -> inverted-U; a
   longer pattern ("-+-", ...) -> inconclusive.
4. No significant step: "flat" when every step's (1 - 2 alpha) interval lies inside
   [-delta, +delta] (two one-sided tests at alpha; delta = `margin`, absolute for
   accuracy metrics, relative to the curve's mean absolute value for losses), otherwise
   inconclusive. A curve with fewer than two models is inconclusive.
Before any of this, a curve none of whose models can show a signal gets no shape but
"no signal" and its reason (`model_no_signal`, `no_signal`): every model is untrained
(manifest `trained: false`), or, for accuracy, answers no example in a way that can be
parsed (100% unparseable chain of thought) or gives one and the same class to every
example. Such curves are left out of "does the variant change the shape".
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from invscale_jax.report import curves as curves_lib
from invscale_jax.report import metrics as metrics_lib

POSITIVE, INVERSE, U_SHAPED, INVERTED_U = "positive", "inverse", "U-shaped", "inverted-U"
FLAT, INCONCLUSIVE = "flat", "inconclusive"
NO_SIGNAL = "no signal"
LABELS = (POSITIVE, INVERSE, U_SHAPED, INVERTED_U, FLAT, INCONCLUSIVE, NO_SIGNAL)
_PATTERNS = {"+": POSITIVE, "-": INVERSE, "-+": U_SHAPED, "+-": INVERTED_U}

RULE_MARKDOWN = """\
### How shape labels are decided

Each curve (one model family, task, prompt variant and metric) orders its models by
training compute (or by parameters when a family's training tokens are unknown). For every
pair of adjacent models the report takes the examples both models were scored on and
computes the paired difference *d* = metric(larger) − metric(smaller), oriented so that
*d* > 0 means better (higher accuracy, lower loss). A paired bootstrap over those examples
(B = {resamples} resamples, the same examples drawn for both models, fixed seed) gives a
two-sided p-value p = min(1, 2·(1 + draws on the rarer side of 0)/(B + 1)) and intervals.

1. **Significant steps.** Holm's step-down correction is applied to the K − 1 steps of the
   curve at α = {alpha}, so the chance that a curve gets any false significant step is at
   most about α (per curve, not across curves; bootstrap p-values are approximate).
2. **Pattern.** The significant steps, read from the smallest to the largest model, with
   repeats merged, give the label: ↑ **positive**; ↓ **inverse**; ↓ then ↑ **U-shaped**;
   ↑ then ↓ **inverted-U**; any longer pattern (↓ ↑ ↓, …): **inconclusive**.
3. **No significant step.** **flat** when every step's {eq_level:.0%} bootstrap interval lies
   inside ±δ (two one-sided tests at α; δ = {margin} absolute for accuracy, and {margin:.0%}
   of the curve's mean value for losses), otherwise **inconclusive**: the data cannot tell.
   A curve with a single model is inconclusive.

Before these steps, a curve is labelled **no signal** (with its reason, e.g. "no signal:
100% unparseable") when none of its models can show one: the model is untrained (its
manifest says `trained: false`: random weights are at chance by construction), or, for
accuracy, every answer of the model is unparseable (chain of thought) or the model gives
the same class to every example (its accuracy is then the share of that class, whatever
the task asks). A curve where only some models are like this keeps its shape and names
them in its notes. "No signal" curves are left out of "does the variant change the shape".

The report refuses fewer than 2(K − 1)/α resamples, with which no step could ever be
significant. Intervals on points and steps are {level:.0%} percentile bootstrap intervals. Points whose
interval contains the chance level are listed as "at chance". Results from external CSVs
have no per-example data and are drawn but not labelled.
"""


@dataclasses.dataclass(frozen=True)
class Shape:
  label: str
  pattern: str  # significant directions in order, e.g. "-+" ("" when none)
  p_holm: tuple[float, ...]  # Holm-adjusted p-value of each step
  significant: tuple[bool, ...]
  margin: float  # delta used for the flat test
  reason: str


def model_no_signal(metric: str, trained: bool | None, unparseable: float | None,
                    predicted: Sequence[int] | None) -> str | None:
  """Why one model's points on a `metric` curve can show nothing (None: they can).
  `unparseable`: the share of CoT answers not parsed; `predicted`: the class chosen for
  each example (-1: none parsed)."""
  if trained is False:
    return "untrained (trained: false)"
  if not metric.startswith("accuracy"):
    return None
  if unparseable is not None and unparseable >= 1.0:
    return "100% unparseable"
  chosen = {int(p) for p in predicted if p >= 0} if predicted is not None else set()
  if len(chosen) == 1 and len(predicted) > 1:
    return f"gives class {chosen.pop()} to every example"
  return None


def no_signal(reasons: Sequence[str | None], models: Sequence[str]) -> str | None:
  """The reason of a curve whose every model has one (`model_no_signal`), else None."""
  if not reasons or any(r is None for r in reasons):
    return None
  if len(set(reasons)) == 1:
    return f"no signal: {reasons[0]}"
  return "no signal: " + "; ".join(f"{m} {r}" for m, r in zip(models, reasons))


def rule_markdown(resamples: int, alpha: float, margin: float) -> str:
  return RULE_MARKDOWN.format(resamples=resamples, alpha=alpha, margin=margin,
                              eq_level=1 - 2 * alpha, level=1 - alpha)


def holm(p_values: Sequence[float], alpha: float) -> tuple[np.ndarray, np.ndarray]:
  """Holm's step-down procedure: (adjusted p-values, rejected) in the input order."""
  p = np.asarray(p_values, dtype=float)
  m = len(p)
  order = np.argsort(p, kind="stable")
  adjusted_sorted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
  adjusted = np.empty(m)
  adjusted[order] = adjusted_sorted
  return adjusted, adjusted <= alpha


def equivalence_margin(metric: str, values: Sequence[float], margin: float) -> float:
  """delta: `margin` itself for accuracy metrics, else `margin` x the mean |value|."""
  if metric.startswith("accuracy"):
    return margin
  return margin * float(np.mean(np.abs(values)))


def label(curve: curves_lib.Curve, alpha: float = 0.05, margin: float = 0.02,
          no_signal_reason: str | None = None) -> Shape | None:
  """The curve's shape by the module's rule; None for diagnostic metrics. A curve with a
  `no_signal_reason` (`no_signal`) is labelled NO_SIGNAL with that reason."""
  higher_is_better = metrics_lib.METRICS[curve.metric].higher_is_better
  if higher_is_better is None:
    return None
  delta = equivalence_margin(curve.metric, [p.value for p in curve.points], margin)
  if no_signal_reason:
    n = len(curve.steps)
    return Shape(NO_SIGNAL, "", (1.0,) * n, (False,) * n, delta, no_signal_reason)
  if not curve.steps:
    return Shape(INCONCLUSIVE, "", (), (), delta, "fewer than two models")
  sign = 1.0 if higher_is_better else -1.0
  adjusted, rejected = holm([s.p_value for s in curve.steps], alpha)
  pattern = ""
  for step, significant in zip(curve.steps, rejected):
    if significant:
      direction = "+" if sign * step.diff > 0 else "-"
      if not pattern.endswith(direction):
        pattern += direction
  p_holm, significant = tuple(float(p) for p in adjusted), tuple(bool(r) for r in rejected)
  if pattern:
    name = _PATTERNS.get(pattern, INCONCLUSIVE)
    reason = ("significant steps: " + ", ".join(
        f"{s.smaller}->{s.larger} {'better' if sign * s.diff > 0 else 'worse'} "
        f"(p_holm={p:.3g})" for s, p, r in zip(curve.steps, adjusted, rejected) if r))
    if name == INCONCLUSIVE:
      reason = f"non-monotonic pattern {pattern}; {reason}"
    return Shape(name, pattern, p_holm, significant, delta, reason)
  if all(-delta <= s.eq_low and s.eq_high <= delta for s in curve.steps):
    return Shape(FLAT, "", p_holm, significant, delta,
                 f"no significant step; every step within +/-{delta:.3g}")
  return Shape(INCONCLUSIVE, "", p_holm, significant, delta,
               f"no significant step, but not shown to be within +/-{delta:.3g}")
