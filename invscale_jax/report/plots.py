"""The figure: one panel per task plus the average panel, like Wei et al.'s figures.

Log-x compute (or parameter) axis, one line per (family, prompt variant) with bootstrap
error bars, a dashed chance line, each line's shape label written below its panel, and
external results as dotted lines with open markers. Families that are training seeds of
one design are drawn thin and light, under their mean over seeds (thick) and its min-max
band (shaded).
"""

from __future__ import annotations

import io
import math
import textwrap

import matplotlib
from matplotlib.figure import Figure  # a bare Figure: no pyplot, no GUI backend
from matplotlib.lines import Line2D

from invscale_jax.report import metrics as metrics_lib
from invscale_jax.report.analysis import COMPUTE, Analysis, task_order, variant_order
from invscale_jax.report.external import AVERAGE
from invscale_jax.report.shapes import NO_SIGNAL
from invscale_jax.report.tables import metric_for

_MARKERS = "osD^vP*Xh"
_NCOLS = 3  # at most; a square-ish grid keeps each panel readable
_LABEL_WIDTH = 62  # characters of a label line below a panel (7 pt, 4.2 in wide)
_LEGEND_ENTRY_WIDTH = 1.7  # inches a legend entry may need (its row fits the figure)


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


def _title(a: Analysis, task: str, curves) -> str:
  """The panel's title; the average's says which tasks it averages."""
  if task != AVERAGE:
    return _plain(task)
  sets = {c.tasks for c in curves}
  if len(sets) == 1:
    (tasks,) = sets
    return _plain(f"Average of {len(tasks)} task{'s' if len(tasks) > 1 else ''}: "
                  + ", ".join(tasks))
  return "Average (tasks differ per line, see labels)"


def _constant(c) -> bool:
  """Every point the same value with no spread (e.g. 0% everywhere)."""
  return len({(p.value, p.ci_low, p.ci_high) for p in c.points}) == 1


def _limits(curves, no_signal, chances) -> tuple[float, float] | None:
  """y limits that leave out curves with no spread at all (0% everywhere) and then those
  with no signal, as long as others remain, so that they do not squeeze the others; None
  when nothing is left out."""
  kept = [c for c in curves if not _constant(c)] or list(curves)
  kept = [c for c in kept if not no_signal(c)] or kept
  if len(kept) == len(curves):
    return None
  values = [v for c in kept for p in c.points
            for v in (p.ci_low, p.ci_high, p.value) if math.isfinite(v)]
  low, high = min(values + chances), max(values + chances)
  pad = 0.08 * (high - low or abs(high) or 1.0)
  return low - pad, high + pad


def figure(a: Analysis, metric: str) -> Figure:
  """The grid of panels for `metric` (sequence tasks show the matching loss).

  Each line's shape label is written below its panel, where it covers no data; points
  on a subset of a task's examples or with truncated prompts have open markers; curves
  with no signal are dashed and, like curves with no spread at all, leave the y axis to
  the others (their label then says "off scale" if they lie outside it).
  """
  tasks = _panels(a, metric)
  families = sorted({c.family for c in a.curves} | {p.family for p in a.externals})
  variants = sorted({c.variant for c in a.curves} | {p.variant for p in a.externals},
                    key=variant_order)
  color = {v: f"C{i % 10}" for i, v in enumerate(variants)}
  marker = {f: _MARKERS[i % len(_MARKERS)] for i, f in enumerate(families)}
  ncols = min(_NCOLS, max(1, math.ceil(math.sqrt(len(tasks)))))
  nrows = max(1, math.ceil(len(tasks) / ncols))
  lines_below = max((sum(2 for c in a.curves if c.task == t and c.metric == metric_for(t, metric))
                     for t in tasks), default=1)
  fig = Figure(figsize=(4.2 * ncols, (3.4 + 0.16 * lines_below) * nrows + 0.8),
               layout="constrained")
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  for ax in axes[len(tasks):]:
    fig.delaxes(ax)
  any_marked = any_no_signal = False
  seeded = {f for s in a.seed_groups for f in s.families}

  def no_signal(c) -> bool:
    shape = a.shapes.get((c.family, c.task, c.variant, c.metric))
    return shape is not None and shape.label == NO_SIGNAL

  for ax, task in zip(axes, tasks):
    shown = metric_for(task, metric)
    curves = [c for c in a.curves if c.task == task and c.metric == shown]
    chances = [p.chance for c in curves for p in c.points if p.chance is not None]
    limits = None if a.externals else _limits(curves, no_signal, chances)
    notes = []
    for c in curves:
      xs = [p.x for p in c.points]
      ys = [p.value for p in c.points]
      err = [[p.value - p.ci_low for p in c.points], [p.ci_high - p.value for p in c.points]]
      dim = no_signal(c)
      any_no_signal |= dim
      seed = c.family in seeded  # thin and light under the mean over seeds
      ax.errorbar(xs, ys, yerr=err, color=color[c.variant], marker=marker[c.family],
                  markersize=3 if seed else 4, capsize=0 if seed else 2,
                  linewidth=0.7 if seed else 1.0 if dim else 1.3,
                  elinewidth=0.5 if seed else None, linestyle="--" if dim else "-",
                  alpha=0.35 if seed else 0.6 if dim else 1.0)
      marked = [p for p in c.points if p.marked]
      if marked:
        any_marked = True
        ax.plot([p.x for p in marked], [p.value for p in marked], linestyle="",
                marker=marker[c.family], markersize=6, markerfacecolor="white",
                markeredgecolor=color[c.variant], zorder=3)
      shape = a.shapes.get((c.family, c.task, c.variant, c.metric))
      if shape is not None:
        who = f"{c.family} " if len(families) > 1 else ""
        what = shape.reason if dim else shape.label
        extra = []
        if task == AVERAGE and len({x.tasks for x in curves}) > 1:
          extra.append(f"avg of {len(c.tasks)}")
        if marked:
          extra.append("open: subset/truncated")
        if c.mixed:
          extra.append(f"mixed checkpoints: {', '.join(c.mixed)}")
        if limits and any(not limits[0] <= p.value <= limits[1] for p in c.points):
          extra.append("off scale")
        notes.append((_plain(f"{who}{c.variant}: {what}"
                             + (f" ({'; '.join(extra)})" if extra else "")), color[c.variant]))
    for s in a.seed_groups:
      if s.task == task and s.metric == shown and s.points:
        xs = [p.x for p in s.points]
        ax.fill_between(xs, [p.low for p in s.points], [p.high for p in s.points],
                        color=color[s.variant], alpha=0.15, linewidth=0)
        ax.plot(xs, [p.mean for p in s.points], color=color[s.variant], linewidth=2.4,
                zorder=4)
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
    if limits is not None:
      ax.set_ylim(*limits)
    ax.set_xscale("log")
    ax.set_title(_title(a, task, curves), fontsize=10 if task != AVERAGE else 8)
    ax.set_xlabel("training FLOPs" if a.axis == COMPUTE else "parameters", fontsize=8)
    ax.set_ylabel(_ylabel(shown), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    offset = 2
    for text, col in notes:  # below the x label, wrapped to the panel: over no data
      text = textwrap.fill(text, _LABEL_WIDTH, subsequent_indent="  ")
      ax.annotate(text, xy=(0.5, 0.0), xycoords=ax.xaxis.label, xytext=(0, -offset),
                  textcoords="offset points", ha="center", va="top", fontsize=7, color=col,
                  annotation_clip=False)
      offset += 8.5 * (text.count("\n") + 1)
  handles = [Line2D([], [], color=color[v], label=_plain(v)) for v in variants]
  handles += [Line2D([], [], color="black", marker=marker[f], linestyle="", label=_plain(f))
              for f in families]
  handles.append(Line2D([], [], color="grey", linestyle="--", label="chance"))
  if seeded:
    counts = {len(s.families) for s in a.seed_groups}
    n = f"{counts.pop()} " if len(counts) == 1 else ""
    handles.append(Line2D([], [], color="black", linewidth=2.4,
                          label=f"mean over {n}seeds (band: min-max)"))
  if any_marked:
    handles.append(Line2D([], [], color="black", marker="o", markerfacecolor="white",
                          linestyle="", label="subset of examples or truncated prompts"))
  if any_no_signal:
    handles.append(Line2D([], [], color="black", linestyle="--", alpha=0.6,
                          label="no signal (see Caveats)"))
  fig.legend(handles=handles, loc="outside lower center", fontsize=8,
             ncol=min(len(handles), max(3, int(4.2 * ncols / _LEGEND_ENTRY_WIDTH))))
  return fig


def render(fig: Figure, fmt: str) -> bytes:
  """The figure as PNG or SVG bytes (SVG keeps text as text, so titles are searchable)."""
  buf = io.BytesIO()
  with matplotlib.rc_context({"svg.fonttype": "none"}):
    fig.savefig(buf, format=fmt, dpi=110)
  return buf.getvalue()
