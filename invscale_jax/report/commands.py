"""`invscale report RESULTS ... --out DIR`: curves, shape labels, plots and a summary."""

from __future__ import annotations

import argparse
import pathlib
from typing import Sequence

from invscale_jax import family as family_lib
from invscale_jax import task_registry
from invscale_jax.data import commands as data_commands
from invscale_jax.report import analysis
from invscale_jax.report import external
from invscale_jax.report import load
from invscale_jax.report import metrics
from invscale_jax.report.errors import ReportError


def make_report(results: Sequence[str], out: str, manifests: Sequence[str] = (),
                externals: Sequence[str] = (),
                options: analysis.Options = analysis.Options()) -> str | pathlib.Path:
  """Reads, analyses and writes the report; bad input raises before anything is written."""
  from invscale_jax.report import output  # pylint: disable=g-import-not-at-top  (matplotlib)
  if not results and not externals:
    raise ReportError("nothing to report: give RESULTS directories or --external CSVs")
  output.check_destination(out)  # fail before the work, not after
  families = [family_lib.load(m) for m in manifests]
  runs = load.load_runs(results, families)
  points = [p for path in externals for p in external.read_external(path)]
  a = analysis.analyse(runs, points, families, options)
  inputs = [*results, *(f"--family {m}" for m in manifests),
            *(f"--external {e}" for e in externals)]
  return output.write(output.render(a, inputs), out)


def _run(args: argparse.Namespace) -> int:
  # Your own tasks come from the results' run.json files (the environment's task
  # directories play no part); --task_dirs adds to them.
  task_registry.use([d for d in (args.task_dirs or "").split(",") if d])
  options = analysis.Options(metric=args.metric, normalise=tuple(dict.fromkeys(args.normalise)),
                             resamples=args.resamples, seed=args.seed, alpha=args.alpha,
                             margin=args.margin, axis=args.x, ties=args.ties)
  out = make_report(args.results, args.out, args.family, args.external, options)
  print(f"report written to {out}")
  return 0


def register(subparsers: argparse._SubParsersAction) -> None:
  p = subparsers.add_parser("report", help="scaling curves, shape labels, plots, summary",
                            description=__doc__.splitlines()[0])
  p.add_argument("results", nargs="*", help="RESULTS directories written by `invscale score`")
  p.add_argument("--out", required=True, help="report directory (replaced atomically)")
  p.add_argument("--family", action="append", default=[], metavar="MANIFEST",
                 help="family manifest whose compute figures override run.json (repeatable)")
  p.add_argument("--external", action="append", default=[], metavar="CSV",
                 help="external results: model,compute,task,metric,value[,ci_low,ci_high,"
                 "variant,family,n_params] (repeatable)")
  data_commands.add_task_dirs_flag(p)
  p.add_argument("--metric", default="accuracy", choices=["accuracy", "loss"],
                 help="metric plotted and tabled first (sequence tasks always use loss)")
  p.add_argument("--normalise", action="append", default=[], choices=metrics.NORMALISATIONS,
                 help="also compute length-normalised metrics (never the default)")
  p.add_argument("--x", default="auto", choices=analysis.AXES,
                 help="x axis: compute if every model has it (auto), or force one")
  p.add_argument("--ties", default=metrics.DEFAULT_TIES, choices=metrics.TIE_RULES,
                 help="accuracy when classes tie for the top score: argmax (the lowest "
                 "index wins, as in the prize's code; default) or fractional (1/k)")
  p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
  p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
  p.add_argument("--alpha", type=float, default=0.05,
                 help="significance level per curve (Holm over its adjacent steps)")
  p.add_argument("--margin", type=float, default=0.02,
                 help="equivalence margin for 'flat': absolute for accuracy, relative for loss")
  p.set_defaults(func=_run)
