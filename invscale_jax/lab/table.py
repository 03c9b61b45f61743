"""The lab's closing table: accuracy of every lab model on the lab tasks, with the report's
shape labels, read from the report's metrics.json (what the report itself computed)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from invscale_jax.lab.world import TASKS


def lab_curves(metrics: dict[str, Any]) -> list[dict[str, Any]]:
  """Accuracy curves of the lab tasks, in task then variant order."""
  curves = [c for c in metrics["curves"] if c["task"] in TASKS and c["metric"] == "accuracy"]
  return sorted(curves, key=lambda c: (c["family"], TASKS.index(c["task"]),
                                       c["variant"] != "zero_shot", c["variant"]))


def render(metrics: dict[str, Any]) -> str:
  """One block per family: a row per model (by compute), a column per task and variant,
  then the shape label of each column."""
  blocks = []
  curves = lab_curves(metrics)
  for family in sorted({c["family"] for c in curves}):
    columns = [c for c in curves if c["family"] == family]
    heads = [f"{c['task'].removeprefix('lab-')} {c['variant'].replace('_shot', '-shot')}"
             for c in columns]
    width = max(12, *(len(h) for h in heads))
    models = [(p["model"], p["compute"]) for p in columns[0]["points"]]
    lines = [f"{family}: accuracy (chance 0.5)",
             f"{'model':10s} {'C (FLOPs)':>10s} " + " ".join(f"{h:>{width}s}" for h in heads)]
    for model, compute in models:
      values = []
      for c in columns:
        value = next((p["value"] for p in c["points"] if p["model"] == model), None)
        values.append("-" if value is None else f"{value:.2f}")
      lines.append(f"{model:10s} {compute or 0:10.1e} "
                   + " ".join(f"{v:>{width}s}" for v in values))
    lines.append(f"{'label':21s} " + " ".join(f"{c.get('label', '-'):>{width}s}" for c in columns))
    blocks.append("\n".join(lines))
  return "\n\n".join(blocks)


def main(report_dir: str | pathlib.Path) -> str:
  """The table of the report in `report_dir` (its metrics.json)."""
  return render(json.loads((pathlib.Path(report_dir) / "metrics.json").read_text()))
