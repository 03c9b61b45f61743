"""The figure: one panel per task plus the average panel, like Wei et al.'s figures.

Log-x compute (or parameter) axis, one line per (family, prompt variant) with bootstrap
error bars, a dashed chance line, each line's shape label written in the panel, and
external results as dotted lines with open markers.
"""

from __future__ import annotations

import io
import math

import matplotlib
from matplotlib.figure import Figure  # a bare Figure: no pyplot, no GUI backend
from matplotlib.lines import Line2D

from invscale_jax.report import metrics as metrics_lib
from invscale_jax.report.analysis import COMPUTE, Analysis, task_order, variant_order
from invscale_jax.report.external import AVERAGE
from invscale_jax.report.tables import metric_for

_MARKERS = "osD^vP*Xh"
_NCOLS = 3  # at most; a square-ish grid keeps each panel readable


def _panels(a: Analysis, metric: str) -> list[str]:
  tasks = {c.task for c in a.curves if c.metric == metric_for(c.task, metric)}
  tasks |= {p.task for p in a.externals if p.metric == metric_for(p.task, metric)}
  return sorted(tasks, key=lambda t: (t == AVERAGE, task_order(t)))


def _plain(text: str) -> str:
  """`text` shown as is: a `$` in a name does not start matplotlib's mathtext."""
  return text.replace("$", r"\$")


def _x(a: Analysis, p) -> float:
  return p.compute if a.axis == COMPUTE else p.n_params


def _ylabel(metric: str) -> str:
  better = metrics_lib.METRICS[metric].higher_is_better
  return metric + ("" if better is None else " (higher is better)" if better
                   else " (lower is better)")


def figure(a: Analysis, metric: str) -> Figure:
  """The grid of panels for `metric` (sequence tasks show the matching loss)."""
  tasks = _panels(a, metric)
  families = sorted({c.family for c in a.curves} | {p.family for p in a.externals})
  variants = sorted({c.variant for c in a.curves} | {p.variant for p in a.externals},
                    key=variant_order)
  color = {v: f"C{i % 10}" for i, v in enumerate(variants)}
  marker = {f: _MARKERS[i % len(_MARKERS)] for i, f in enumerate(families)}
  ncols = min(_NCOLS, max(1, math.ceil(math.sqrt(len(tasks)))))
  nrows = max(1, math.ceil(len(tasks) / ncols))
  fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows + 0.8), layout="constrained")
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  for ax in axes[len(tasks):]:
    fig.delaxes(ax)
  for ax, task in zip(axes, tasks):
    shown = metric_for(task, metric)
    notes, chances = [], []
    for c in a.curves:
      if c.task != task or c.metric != shown:
        continue
      xs = [p.x for p in c.points]
      ys = [p.value for p in c.points]
      err = [[p.value - p.ci_low for p in c.points], [p.ci_high - p.value for p in c.points]]
      ax.errorbar(xs, ys, yerr=err, color=color[c.variant], marker=marker[c.family],
                  markersize=4, capsize=2, linewidth=1.3)
      chances += [p.chance for p in c.points if p.chance is not None]
      shape = a.shapes.get((c.family, c.task, c.variant, c.metric))
      if shape is not None:
        who = f"{c.family} " if len(families) > 1 else ""
        notes.append((_plain(f"{who}{c.variant}: {shape.label}"), color[c.variant]))
    for fam in families:
      for v in variants:
        pts = sorted(((_x(a, p), p) for p in a.externals
                      if (p.family, p.variant, p.task, p.metric) == (fam, v, task, shown)),
                     key=lambda xp: xp[0])
        if pts:
          xs, pts = zip(*pts)
          ax.plot(xs, [p.value for p in pts], linestyle=":", color=color[v],
                  marker=marker[fam], markerfacecolor="none", linewidth=1.3)
          lows = [(x, p.ci_low, p.ci_high) for x, p in zip(xs, pts) if p.ci_low is not None]
          if lows:
            ax.vlines(*zip(*lows), color=color[v], linewidth=1)
    if chances:
      ax.axhline(sum(chances) / len(chances), linestyle="--", color="grey", linewidth=1)
    for i, (text, col) in enumerate(notes):
      ax.text(0.02, 0.03 + 0.08 * i, text, transform=ax.transAxes, fontsize=7, color=col,
              bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
    ax.set_xscale("log")
    ax.set_title("Average (classification tasks)" if task == AVERAGE else _plain(task),
                 fontsize=10)
    ax.set_xlabel("training FLOPs" if a.axis == COMPUTE else "parameters", fontsize=8)
    ax.set_ylabel(_ylabel(shown), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
  handles = [Line2D([], [], color=color[v], label=_plain(v)) for v in variants]
  handles += [Line2D([], [], color="black", marker=marker[f], linestyle="", label=_plain(f))
              for f in families]
  handles.append(Line2D([], [], color="grey", linestyle="--", label="chance"))
  fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8),
             fontsize=8)
  return fig


def render(fig: Figure, fmt: str) -> bytes:
  """The figure as PNG or SVG bytes (SVG keeps text as text, so titles are searchable)."""
  buf = io.BytesIO()
  with matplotlib.rc_context({"svg.fonttype": "none"}):
    fig.savefig(buf, format=fmt, dpi=110)
  return buf.getvalue()
