"""`make demo`: the whole pipeline on a trained family with a known answer, and on the
embedded tiny family.

1. trains the distractor lab's default family under OUT/lab (`invscale lab`; kept when
   already trained with the same configuration) and creates the tiny family (randomly
   initialised T5X checkpoints) under OUT/family if missing;
2. scores the lab family on lab-conflict, lab-rule and lab-memo, zero-shot and 1-shot,
   and the tiny family on the prize's memo-trap, zero-shot (the prize task path);
3. writes the report to OUT/report and ends with the table of results and the lab's table
   (accuracy by model and the report's shape labels: lab-conflict is U-shaped).
Re-running resumes: finished runs are skipped.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from invscale_jax import cli
from invscale_jax.data import datadir
from invscale_jax.lab import table

# (tasks, variants, extra flags): each a `score` command of the tiny family, run if its
# tasks are present. The byte vocabulary counts one token per byte: 1024 holds every
# memo-trap prompt.
STEPS = ((("memo-trap",), "zero_shot", ("--max_length", "1024")),)
LAB_TASKS = "lab-conflict,lab-rule,lab-memo"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", help="task data directory")
  parser.add_argument("--out", default="demo_out")
  parser.add_argument("-v", "--verbose", action="store_true",
                      help="show the libraries' start-up and log messages")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  data_dir = datadir.resolve(args.data_dir)
  present = [s.name for s in datadir.present_tasks(data_dir)]
  if not present:
    print(f"demo: no task files in {data_dir}.\n"
          f"  Download the release:  .venv/bin/invscale data download --data_dir {data_dir}\n"
          f"  or point at a copy:    make demo DATA_DIR=/path/to/inverse_scaling", file=sys.stderr)
    return 2
  start = time.time()
  manifest = out / "family" / "manifest.json"
  results = str(out / "results")
  steps = [["data", "status", "--data_dir", str(data_dir)], ["lab", "--out", str(out / "lab")],
           ["score", "--family", str(out / "lab" / "manifest.json"), "--tasks", LAB_TASKS,
            "--variants", "zero_shot,1_shot", "--out", results, "--quiet"]]
  if not manifest.is_file():
    steps.append(["family", "init-tiny", "--out", str(manifest.parent)])
  for tasks, variants, flags in STEPS:
    here = [t for t in tasks if t in present]
    if here:
      steps.append(["score", "--family", str(manifest), "--tasks", ",".join(here),
                    "--variants", variants, "--data_dir", str(data_dir), "--out", results,
                    "--quiet", *flags])
  steps += [["report", results, "--out", str(out / "report")], ["results", results]]
  for step in steps:
    print(f"\n$ invscale {' '.join(step)}", file=sys.stderr, flush=True)
    status = cli.main(step + (["--verbose"] if args.verbose else []))
    if status:
      return status
  print(f"\n{table.main(out / 'report')}")
  print(f"\ndemo: done in {time.time() - start:.0f} s; open {out / 'report' / 'report.html'}",
        file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
