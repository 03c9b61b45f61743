"""The report's human-readable sections, as data that `markdown` and `html` render."""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Sequence

from invscale_jax import task_registry
from invscale_jax.report import metrics as metrics_lib
from invscale_jax.report import shapes
from invscale_jax.report.analysis import COMPUTE, Analysis, task_order, variant_order
from invscale_jax.report.external import AVERAGE

_RATES = ("accuracy", "tie_rate", "unparseable_rate")


@dataclasses.dataclass(frozen=True)
class Table:
  headers: tuple[str, ...]
  rows: tuple[tuple[str, ...], ...]


@dataclasses.dataclass(frozen=True)
class Section:
  title: str
  text: str = ""  # markdown: paragraphs, **bold**, *italic*, numbered lists
  table: Table | None = None
  items: tuple[str, ...] = ()  # a bullet list


def metric_for(task: str, metric: str) -> str:
  """The metric shown for a task: sequence tasks have losses, not accuracies (as have
  your own tasks whose declared metric is loss)."""
  if task != AVERAGE and task_registry.get(task).headline == "loss":
    return metric.replace("accuracy", "loss")
  return metric


def fmt(metric: str, value: float | None, signed: bool = False) -> str:
  if value is None or math.isnan(value):
    return "—"
  if metric.startswith(_RATES):
    return f"{100 * value:+.1f} pts" if signed else f"{100 * value:.1f}%"
  return f"{value:+.3g}" if signed else f"{value:.3g}"


def _task_title(task: str, metric: str, shown: str) -> str:
  return task if shown == metric else f"{task} ({shown})"


def _rows(a: Analysis, metric: str):
  """(family, task, shown metric) in display order, for tasks that have curves."""
  keys = {(c.family, c.task, c.metric) for c in a.curves if c.metric == metric_for(c.task, metric)}
  return sorted(keys, key=lambda k: (k[0], task_order(k[1])))


def _variants(a: Analysis) -> list[str]:
  return sorted({c.variant for c in a.curves}, key=variant_order)


def shape_section(a: Analysis, metric: str) -> Section:
  variants = _variants(a)
  rows = []
  for fam, task, shown in _rows(a, metric):
    cells = [a.shapes.get((fam, task, v, shown)) for v in variants]
    rows.append((fam, _task_title(task, metric, shown),
                 *(s.label if s else "—" for s in cells)))
  return Section(f"Shape of the {metric} curves", table=Table(("family", "task", *variants),
                                                               tuple(rows)))


def _other_checkpoints(a: Analysis, fam: str, task: str, base: str, variant: str) -> list[str]:
  """Models whose checkpoint differs between the two variants' runs (of every averaged
  task, for the average)."""
  tasks = next((x.tasks for x in a.averages if (x.family, x.variant) == (fam, variant)), ()
               ) if task == AVERAGE else (task,)
  models = sorted({m for (f, m, _, _) in a.identities if f == fam})
  out = []
  for m in models:
    ids = {a.identities.get((fam, m, t, v), "") for t in tasks for v in (base, variant)}
    if len(ids - {""}) > 1:
      out.append(m)
  return out


def variant_section(a: Analysis, metric: str) -> Section:
  """Does a prompt variant (1-shot, chain of thought) change the zero-shot shape? Curves
  with no signal are left out; models scored with other checkpoints are named."""
  variants = _variants(a) or ["zero_shot"]  # none: external points only
  base, others = variants[0], variants[1:]
  rows, skipped = [], []
  for fam, task, shown in _rows(a, metric):
    before = a.shapes.get((fam, task, base, shown))
    for v in others:
      after = a.shapes.get((fam, task, v, shown))
      if not (before and after):
        continue
      title = _task_title(task, metric, shown)
      if shapes.NO_SIGNAL in (before.label, after.label):
        which, why = (base, before) if before.label == shapes.NO_SIGNAL else (v, after)
        skipped.append(f"{fam} {title} {v} ({which}: {why.reason})")
        continue
      changed = "no" if before.label == after.label else f"yes: {before.label} → {after.label}"
      mixed = _other_checkpoints(a, fam, task, base, v)
      if mixed:
        changed += f" (other checkpoints of {', '.join(mixed)}: not one model)"
      rows.append((fam, title, v, before.label, after.label, changed))
  return Section(f"Does the prompt variant change the shape? ({metric}, against {base})",
                 text="Curves with no signal are left out; they are listed below the "
                 "table." if skipped else "",
                 table=Table(("family", "task", "variant", base, "variant's shape",
                              "shape changes?"), tuple(rows)), items=tuple(skipped))


def _at_chance(points) -> str:
  return ", ".join(p.model for p in points
                   if p.chance is not None and p.ci_low <= p.chance <= p.ci_high) or "—"


def steps_section(a: Analysis, metric: str) -> Section:
  rows = []
  for c in a.curves:
    shape = a.shapes.get((c.family, c.task, c.variant, c.metric))
    if shape is None or c.metric != metric_for(c.task, metric):
      continue
    steps = "; ".join(
        f"{s.smaller}→{s.larger} {fmt(c.metric, s.diff, signed=True)} "
        f"[{fmt(c.metric, s.ci_low, True)}, {fmt(c.metric, s.ci_high, True)}] "
        f"p_holm={p:.3g}{' *' if sig else ''}"
        for s, p, sig in zip(c.steps, shape.p_holm, shape.significant))
    notes = ([shape.reason] if shape.label == shapes.NO_SIGNAL else []) + list(c.notes)
    rows.append((c.family, _task_title(c.task, metric, c.metric), c.variant, shape.label,
                 steps or "—", _at_chance(c.points), "; ".join(notes) or "—"))
  return Section(f"Adjacent steps ({metric}; * significant after Holm)",
                 text="Difference larger − smaller model on the examples both were scored on, "
                 f"with its {1 - a.options.alpha:.0%} paired-bootstrap interval; notes say "
                 "what a curve's numbers are besides numbers (see Caveats).",
                 table=Table(("family", "task", "variant", "shape", "steps", "at chance",
                              "notes"), tuple(rows)))


def _x_value(a: Analysis, p) -> str:
  x = p.compute if a.axis == COMPUTE else p.n_params
  return "—" if x is None else f"{x:.3g}"


def values_section(a: Analysis, metric: str) -> Section:
  """Every point of the plot: value, interval and examples per model."""
  level = f"{1 - a.options.alpha:.0%}"
  rows = []
  for c in a.curves:
    if c.metric != metric_for(c.task, metric):
      continue
    for p in c.points:
      notes = list(p.notes) + ([] if p.complete else ["incomplete run"])
      rows.append((c.family, _task_title(c.task, metric, c.metric), c.variant, p.model,
                   _x_value(a, p), fmt(c.metric, p.value),
                   f"[{fmt(c.metric, p.ci_low)}, {fmt(c.metric, p.ci_high)}]",
                   str(p.n_examples), "; ".join(notes) or "—"))
  axis = "compute (FLOPs)" if a.axis == COMPUTE else "parameters"
  return Section(f"Values per model ({metric})",
                 text=f"Each point of the plot with its {level} bootstrap interval; `examples` "
                 "counts the examples behind it (summed over tasks for the average).",
                 table=Table(("family", "task", "variant", "model", axis, "value",
                              f"{level} interval", "examples", "notes"), tuple(rows)))


def seeds_section(a: Analysis, metric: str) -> Section:
  """The mean over the seeds of each design, per model, with its min-max band."""
  rows, items = [], []
  for s in a.seed_groups:
    if s.metric != metric_for(s.task, metric):
      continue
    title = _task_title(s.task, metric, s.metric)
    for p in s.points:
      rows.append((s.group, title, s.variant, p.model, _x_value(a, p), fmt(s.metric, p.mean),
                   f"[{fmt(s.metric, p.low)}, {fmt(s.metric, p.high)}]", str(p.n_seeds)))
    items += [f"{s.group} {title} {s.variant}: left out {why}" for why in s.left_out]
  axis = "compute (FLOPs)" if a.axis == COMPUTE else "parameters"
  return Section(f"Mean over training seeds ({metric})",
                 text="Families of one `seed_group` are training seeds of one design. Each "
                 "model's mean over the seeds, and the band from the lowest to the highest "
                 "seed (drawn as the thick line and shaded band over the thin per-seed "
                 "lines). Only models present in every seed family at the same x are "
                 "averaged; shapes stay per family.",
                 table=Table(("seed group", "task", "variant", "model", axis, "mean",
                              "band (min-max)", "seeds"), tuple(rows)), items=tuple(items))


def caveats_section(a: Analysis) -> Section:
  """Everything a reader must know before trusting a number: subsets, truncated prompts,
  dtypes and BOS conventions, curves without signal, example sets made comparable, and
  checkpoints mixed under one model name (what each average averages has its section)."""
  items = []
  setups = collections.defaultdict(collections.Counter)
  for n in a.runs:
    setups[n.family][n.setup] += 1
  shared = {}  # family -> the notes every run of it has, said once
  for fam, counts in sorted(setups.items()):
    items.append(f"{fam}: dtype and prompt prefix: " + "; ".join(
        f"{setup} ({k} run{'s' if k > 1 else ''})" for setup, k in counts.most_common()))
    runs = [n for n in a.runs if n.family == fam]
    shared[fam] = [t for t in runs[0].notes if all(t in n.notes for n in runs)]
    items += [f"{fam}: every run: {t}" for t in shared[fam]]
  silent = collections.defaultdict(lambda: collections.defaultdict(list))
  for c in a.curves:
    shape = a.shapes.get((c.family, c.task, c.variant, c.metric))
    if shape is not None and shape.label == shapes.NO_SIGNAL:
      silent[(c.family, shape.reason)][(c.task, c.variant)].append(c.metric)
  items += [f"{fam}: {reason}, so no shape for " + "; ".join(
      f"{task} {variant} ({', '.join(metrics)})" for (task, variant), metrics in found.items())
            for (fam, reason), found in silent.items()]
  for c in a.curves:
    if c.metric == metric_for(c.task, a.options.metric):
      items += [f"{c.family} {c.task} {c.variant} {c.metric}: {n}" for n in c.notes
                if n.startswith("every point uses")]
  items += [m.text() + "; averages and shape changes across them mix checkpoints"
            for m in a.mixed]
  rows = tuple((n.family, n.model, f"{n.task}.{n.variant}", "; ".join(own))
               for n in a.runs
               for own in [[t for t in n.notes if t not in shared[n.family]]] if own)
  text = ("Open markers on the plot: points on a subset of a task's examples or with "
          "prompts cut to fit max_length. Dashed lines: curves with no signal.")
  if not rows and len(items) == len(setups) and not any(n.marked for n in a.runs):
    text = ("Every run holds all of its task's examples with whole prompts, and every "
            "curve has a signal.")
  return Section("Caveats", text=text, items=tuple(items),
                 table=Table(("family", "model", "task.variant", "caveats"), rows)
                 if rows else None)


def unparseable_section(a: Analysis) -> Section:
  rows = tuple((p.family, p.task, p.variant, p.model, fmt("unparseable_rate", p.value),
                f"[{fmt('unparseable_rate', p.ci_low)}, {fmt('unparseable_rate', p.ci_high)}]",
                str(p.n_examples))
               for c in a.curves if c.metric == "unparseable_rate" for p in c.points)
  return Section("Unparseable chain-of-thought answers (scored wrong)",
                 text="" if rows else "No chain-of-thought results.",
                 table=Table(("family", "task", "variant", "model", "unparseable",
                              "interval", "examples"), rows) if rows else None)


def balance_section(a: Analysis) -> Section:
  rows = tuple(
      (task, str(b.n_examples),
       ", ".join(f"{i}: {100 * s:.1f}%" for i, s in sorted(b.shares.items())),
       f"{100 * b.uniform:.1f}%", f"{100 * b.majority:.1f}%", "yes" if b.imbalanced else "no")
      for task, b in sorted(a.class_balance.items(), key=lambda kv: task_order(kv[0])))
  return Section(
      "Class balance (share of each answer_index)",
      text="Always answering the commonest index scores the *constant-answer* accuracy; a task "
      "is flagged when it beats the balanced share by more than 10 points (the modus-tollens "
      "release has a published caveat about its answer balance).",
      table=Table(("task", "examples", "answer shares", "balanced share",
                   "constant-answer accuracy", "imbalanced"), rows))


def ties_section(a: Analysis) -> Section:
  rule = ("**argmax**: the lowest class index wins, as np.argmax in the prize's code "
          "(--ties fractional scores a k-way tie that includes the answer 1/k)"
          if a.options.ties == "argmax" else
          "**fractional**: a k-way tie that includes the answer scores 1/k (--ties argmax: "
          "the lowest class index wins, as in the prize's code)")
  rows = tuple((t.family, t.task, t.variant, t.model, str(t.tied), str(t.n_examples))
               for t in a.ties if t.tied)
  return Section("Ties for the top class score",
                 text=f"Accuracy breaks a tie by {rule}. "
                 + ("Runs not listed have no ties." if rows else "No run has a tie."),
                 table=Table(("family", "task", "variant", "model", "tied examples",
                              "examples"), rows) if rows else None)


def average_section(a: Analysis, metric: str) -> Section:
  items = tuple(f"{x.family} {x.variant}: {len(x.tasks)} task(s) at every point: "
                f"{', '.join(x.tasks)}"
                + (f" (left out: {', '.join(x.left_out)})" if x.left_out else "")
                for x in a.averages if x.metric == metric)
  return Section(f"Average over the classification tasks ({metric})",
                 text="Unweighted mean of the task means, over the tasks every model of the "
                 "curve has (Wei et al., Figure 1)." if items else "No average.", items=items)


def sections(a: Analysis) -> list[Section]:
  """Every section, the chosen metric first, then the other labelled metrics."""
  labelled = [m for m in metrics_lib.METRICS if metrics_lib.METRICS[m].higher_is_better is not None
              and m != a.options.metric and any(c.metric == m for c in a.curves)]
  out = [caveats_section(a), shape_section(a, a.options.metric),
         variant_section(a, a.options.metric), average_section(a, a.options.metric),
         steps_section(a, a.options.metric), values_section(a, a.options.metric)]
  if a.seed_groups:
    out.append(seeds_section(a, a.options.metric))
  out += [shape_section(a, m) for m in labelled]
  out += [unparseable_section(a), ties_section(a), balance_section(a),
          Section("What is missing", text="" if a.missing else "Nothing: every run is complete.",
                  items=a.missing),
          Section("Method", text=shapes.rule_markdown(a.options.resamples, a.options.alpha,
                                                      a.options.margin))]
  return out


def header_lines(a: Analysis, inputs: Sequence[str]) -> list[str]:
  axis = "training compute (FLOPs)" if a.axis == "compute" else "parameters"
  lines = [f"Inputs: {', '.join(inputs)}",
           f"x axis: {axis}; intervals: {1 - a.options.alpha:.0%} bootstrap over examples, "
           f"{a.options.resamples} resamples, seed {a.options.seed}"]
  changed = sorted({c.task for c in a.curves if c.task != AVERAGE
                    and task_registry.get(c.task).changed_after_evaluation}, key=task_order)
  if changed:
    lines.append(f"Data: the {', '.join(changed)} release changed after the prize's own "
                 "evaluation; numbers may differ from the prize's published plots")
  if any(c.metric == "unparseable_rate" for c in a.curves):
    lines.append("Chain of thought: accuracy parses the generated answer; loss re-scores "
                 "the classes after the generation")
  return lines
