"""`invscale import t5x-infer`: T5X infer's score outputs into the results store.

Each INFER_DIR is the output dir of T5X infer runs of ONE model of the family (any number
of task variants, one file set each; see `t5x_infer`), named by the directory's name or
`--model`. Every file is read and checked before anything is written, so bad input
leaves the results as they were. Each (model, task, variant) becomes a run as
`invscale score` writes it (run.json, chunks, COMPLETE), keyed by the content of the
files it came from: importing the same files again does nothing, and a run of the same
(model, task, variant) already there with other numbers is an error, never a mix.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from typing import Any, Sequence

from invscale_jax import family as family_lib
from invscale_jax import records, results, storage, t5x_infer
from invscale_jax.engine import runkey

CHUNK_SIZE = 256  # examples per chunk, as `invscale score` writes by default
SOURCE = "t5x-infer"


def _run(family: family_lib.Family, entry: family_lib.ModelEntry,
         output: t5x_infer.Output) -> tuple[dict[str, Any], list[records.Record]]:
  """run.json and the records of one task variant of one model."""
  files = {storage.basename(p): hashlib.sha256(storage.read_bytes(p)).hexdigest()
           for p in output.files}
  parts = {"source": SOURCE, "family": family.name, "model": entry.name,
           "task": output.task.name, "variant": output.variant.name, "files": files}
  key = runkey.run_key(parts)
  recs = t5x_infer.read_output(output, entry.name, key)
  info = dict(parts, run_key=key, engine_version=runkey.ENGINE_VERSION, model=entry.to_dict(),
              t5x_infer_dir=storage.parent(output.files[0]),
              n_examples=len({r.example_id for r in recs}), n_rows=len(recs),
              n_records=len(recs), record_kinds=[recs[0].kind], n_truncated=0,
              n_demos_dropped=sum(r.n_demos_dropped for r in recs
                                  if r.class_index in (None, 0)))
  return info, recs


def _existing(out: str) -> dict[tuple[str, str, str, str], tuple[str, bool]]:
  """(family, model, task, variant) -> (run key, complete) of the runs already in OUT."""
  found = {}
  for directory in results.run_dirs(out):
    info = results.read_run_info(directory)
    model = info.get("model", {}).get("name") if isinstance(info.get("model"), dict) else None
    found[(info.get("family"), model, info.get("task"), info.get("variant"))] = (
        info.get("run_key"), results.is_complete(directory))
  return found


def import_dirs(family: family_lib.Family, dirs: Sequence[str], out: str,
                model: str | None = None) -> list[tuple[dict[str, Any], bool]]:
  """Imports every infer dir; returns (run.json, newly written) per run."""
  if model is not None and len(dirs) != 1:
    raise ValueError(f"--model names the model of one INFER_DIR; {len(dirs)} given (name "
                     f"each directory after its model instead)")
  runs: dict[tuple[str, str, str], tuple[dict[str, Any], list[records.Record]]] = {}
  for directory in dirs:
    directory = storage.absolute(directory)
    if not storage.is_dir(directory):
      raise FileNotFoundError(f"{directory}: T5X infer output dir not found")
    entry = family.get(model or storage.basename(directory.rstrip("/")))
    for output in t5x_infer.find_outputs(directory):
      info, recs = _run(family, entry, output)
      name = (entry.name, info["task"], info["variant"])
      if name in runs:
        raise ValueError(f"{directory}: {' '.join(name)} also in "
                         f"{runs[name][0]['t5x_infer_dir']}: import one of them")
      runs[name] = (info, recs)
  existing = _existing(out)
  done = []
  for (name, task, variant), (info, _) in runs.items():
    key, complete = existing.get((family.name, name, task, variant), (info["run_key"], False))
    if key != info["run_key"]:
      raise ValueError(f"{out}: already holds a run of {family.name}/{name} {task}.{variant} "
                       f"(run key {key}) with other numbers than {info['t5x_infer_dir']}; "
                       f"remove it or import into another --out (nothing was imported)")
    done.append(complete)
  written = []
  with results.LeaseKeeper() as keeper:
    for ((name, task, variant), (info, recs)), complete in zip(runs.items(), done):
      if not complete:
        label = f"{name} {task}.{variant} (run {info['run_key']})"
        writer = results.open_run(results.run_dir(out, info["run_key"]), info, label, keeper)
        todo = [r for r in recs if r.example_id not in writer.done]
        ids = sorted({r.example_id for r in todo})
        for start in range(0, len(ids), CHUNK_SIZE):
          chunk = set(ids[start:start + CHUNK_SIZE])
          writer.write_chunk([r for r in todo if r.example_id in chunk])
        writer.finish({"source": SOURCE})
      written.append((info, not complete))
  return written


def _import_t5x_infer(args: argparse.Namespace) -> int:
  family = family_lib.load(family_lib.find(args.family))
  out = storage.absolute(args.out)
  for info, new in import_dirs(family, args.infer_dirs, out, args.model):
    state = "imported" if new else "already imported"
    print(f"{info['model']['name']} {info['task']}.{info['variant']}: {info['n_examples']} "
          f"examples, {state} (run {info['run_key']})", file=sys.stderr)
  print(f"results in {out}; next: invscale report {out} --out REPORT_DIR")
  return 0


def register(subparsers: argparse._SubParsersAction) -> None:
  p = subparsers.add_parser("import", help="results scored elsewhere into a results store",
                            description="Results scored elsewhere into a results store.")
  sub = p.add_subparsers(dest="source", required=True)
  t = sub.add_parser(
      "t5x-infer", help="T5X infer score-mode outputs (gin/t5x/score_invscale.gin)",
      description=__doc__.splitlines()[0])
  t.add_argument("infer_dirs", nargs="+", metavar="INFER_DIR",
                 help="T5X infer output dir of one model (named after it, or see --model)")
  t.add_argument("--family", required=True, help="family manifest (or a shipped family name) "
                 "naming the models: their N, D and C")
  t.add_argument("--out", required=True, help="RESULTS directory (local or gs://)")
  t.add_argument("--model", help="the model of the one INFER_DIR (default: its name)")
  t.set_defaults(func=_import_t5x_infer)
