"""Machine-readable outputs: tidy `metrics.csv` and the complete `metrics.json`."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from typing import Any, Sequence

from invscale_jax.report.analysis import Analysis

CSV_COLUMNS = ("family", "model", "compute", "n_params", "task", "variant", "metric", "value",
               "ci_low", "ci_high", "n_examples", "chance", "notes")
NOTE_SEPARATOR = "; "  # between a point's notes in the `notes` column


def _clean(value: Any) -> Any:
  """JSON-safe: non-finite floats become null, tuples lists, dict keys strings."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {str(k): _clean(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_clean(v) for v in value]
  return value


def _csv_value(value: Any) -> str:
  """Numbers as they are; text that a spreadsheet would run as a formula gets a leading
  quote (OWASP's rule: text starting with = + - @ tab or CR)."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return ""
  if isinstance(value, str):
    return f"'{value}" if value.startswith(("=", "+", "-", "@", "\t", "\r")) else value
  return repr(value) if isinstance(value, float) else str(value)


def metrics_csv(a: Analysis) -> str:
  """One row per (family, model, task, variant, metric), runs then external points; `notes`
  holds a point's caveats (subset, truncation, ...), joined by NOTE_SEPARATOR."""
  rows = [dataclasses.asdict(p) | {"notes": NOTE_SEPARATOR.join(p.notes)}
          for c in a.curves for p in c.points]
  rows += [dataclasses.asdict(p) | {"n_examples": None, "chance": None, "notes": ""}
           for p in a.externals]
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(CSV_COLUMNS)
  writer.writerows([_csv_value(r[k]) for k in CSV_COLUMNS] for r in rows)
  return buf.getvalue()


def _curve(a: Analysis, c) -> dict[str, Any]:
  shape = a.shapes.get((c.family, c.task, c.variant, c.metric))
  d = dataclasses.asdict(c)
  if shape is not None:
    for step, p, sig in zip(d["steps"], shape.p_holm, shape.significant):
      step.update(p_holm=p, significant=sig)
    d.update(label=shape.label, pattern=shape.pattern, margin=shape.margin,
             reason=shape.reason)
  return d


def metrics_json(a: Analysis, inputs: Sequence[str]) -> str:
  data = {
      "settings": dataclasses.asdict(a.options) | {"axis": a.axis},
      "inputs": list(inputs),
      "curves": [_curve(a, c) for c in a.curves],
      "averages": [dataclasses.asdict(x) for x in a.averages],
      "externals": [dataclasses.asdict(p) for p in a.externals],
      "class_balance": {t: dataclasses.asdict(b) for t, b in a.class_balance.items()},
      "missing": list(a.missing),
      "ties": [dataclasses.asdict(t) for t in a.ties],
      "runs": [dataclasses.asdict(n) for n in a.runs],
      "mixed_checkpoints": [{"family": m.family, "model": m.model, "text": m.text(),
                             "runs": [dict(zip(("identity", "task", "variant"), r))
                                      for r in m.runs]} for m in a.mixed],
      "seed_groups": [dataclasses.asdict(s) for s in a.seed_groups],
  }
  return json.dumps(_clean(data), indent=1, ensure_ascii=False) + "\n"
