"""`make demo`: the whole pipeline on the embedded tiny family.

1. creates the tiny family (T5X checkpoints + manifest) under OUT/family if missing;
2. scores it, with every prompt whole (no demonstration dropped, no prompt cut):
   - memo-trap and neqa, zero-shot and 1-shot;
   - neqa, 1-shot chain of thought (generate, parse the answer, then rank-classify);
   - hindsight-neglect zero-shot (its prompts already hold 10 demonstrations, up to 3,000
     tokens), on its first DEMO_LIMIT examples to keep the demo short;
3. writes the report to OUT/report and ends with the table of results.
Re-running resumes: finished runs are skipped.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from invscale_jax import cli
from invscale_jax.data import datadir

# (tasks, variants, extra flags): each a `score` command, run if its tasks are present.
# The byte vocabulary counts one token per byte: 1024 holds every memo-trap and neqa prompt
# with its demonstration (and 48 generated tokens), 4096 every hindsight-neglect prompt.
DEMO_LIMIT = 64
STEPS = (
    (("memo-trap", "neqa"), "zero_shot,1_shot", ("--max_length", "1024")),
    (("neqa",), "cot_1_shot", ("--max_length", "1024", "--generation_length", "48")),
    (("hindsight-neglect",), "zero_shot", ("--max_length", "4096",
                                           "--limit", str(DEMO_LIMIT))),
)


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
  steps = [["data", "status", "--data_dir", str(data_dir)]]
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
  print(f"\ndemo: done in {time.time() - start:.0f} s; open {out / 'report' / 'report.html'}",
        file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
