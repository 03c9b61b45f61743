"""`invscale data status|validate|download` and `invscale tasks list|lengths`."""

from __future__ import annotations

import argparse
import sys

from invscale_jax import catalog, storage
from invscale_jax.data import datadir, download, loader


def _status(args: argparse.Namespace) -> int:
  root = datadir.resolve(args.data_dir)
  print(f"data dir: {root}")
  rows = datadir.status(root)
  print(f"{'task':30s} {'status':9s} {'rows':>6s}  file")
  for s in rows:
    count = "" if s.rows is None else str(s.rows)
    note = f"  ({s.problems} invalid rows: run `invscale data validate`)" if s.problems else ""
    print(f"{s.spec.name:30s} {s.state:9s} {count:>6s}  {s.spec.filename}{note}")
  n = {state: sum(s.state == state for s in rows)
       for state in (datadir.PRESENT_VERIFIED, datadir.PRESENT_DIFFERS, datadir.MISSING)}
  print(f"{n[datadir.PRESENT_VERIFIED]} verified, {n[datadir.PRESENT_DIFFERS]} differ from the "
        f"official release, {n[datadir.MISSING]} missing")
  return 0


def _validate(args: argparse.Namespace) -> int:
  failed = False
  for path in args.files:
    examples, problems = loader.check(path)
    for p in problems:
      print(p, file=sys.stderr)
    spec = catalog.by_filename(storage.basename(path))
    hash_note = ""
    if spec is not None and not problems:
      if datadir.sha256_of(path) == spec.sha256:
        hash_note = ", matches the official sha256"
      else:
        line = f"{path}:0: sha256: differs from the official {spec.filename}"
        print(("error: " if args.strict else "warning: ") + line, file=sys.stderr)
        failed |= args.strict
    if problems:
      failed = True
      print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
    else:
      print(f"{path}: {len(examples)} rows OK{hash_note}")
  return 1 if failed else 0


def _download(args: argparse.Namespace) -> int:
  root = datadir.resolve(args.data_dir)
  specs = [catalog.get(t) for t in args.tasks.split(",")] if args.tasks else list(catalog.TASKS)
  if not args.time_limit > 0:
    raise ValueError(f"--time_limit must be a positive number of seconds, got {args.time_limit}")
  errors = download.download(root, download.base_url(args.base_url), specs,
                             time_limit=args.time_limit)
  for e in errors:
    print(f"invscale: error: {e}", file=sys.stderr)
  return 1 if errors else 0


def _tasks_list(args: argparse.Namespace) -> int:
  import seqio  # pylint: disable=g-import-not-at-top
  import seqio_tasks  # pylint: disable=g-import-not-at-top

  if args.variants:
    for v in args.variants.split(","):
      seqio_tasks.register_variant(v)
  for name in sorted(n for n in seqio.TaskRegistry.names() if n.startswith("invscale:")):
    print(name)
  return 0


def _tasks_lengths(args: argparse.Namespace) -> int:
  import seqio_tasks  # pylint: disable=g-import-not-at-top
  from invscale_jax import vocab, vocab_spec  # pylint: disable=g-import-not-at-top
  from seqio_tasks import lengths  # pylint: disable=g-import-not-at-top

  name = args.task if ":" in args.task else f"{seqio_tasks.tasks.PREFIX}:{args.task}"
  spec, variant = seqio_tasks.parse_task_name(name)
  vocabulary = vocab.from_spec(vocab_spec.spec_of(args.vocabulary or "byte"))
  options = seqio_tasks.tasks.PromptOptions(args.seed, args.max_length or None)
  task = seqio_tasks.build_task(spec.name, variant.name, vocabulary, options,
                                str(datadir.resolve(args.data_dir)), args.encoder_eos)
  print(f"TASK_FEATURE_LENGTHS = {lengths.max_lengths(task)!r}")
  return 0


def _tfds_build(args: argparse.Namespace) -> int:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from invscale_jax.data import inverse_scaling_prize as dataset  # pylint: disable=g-import-not-at-top
  manual_dir = datadir.resolve(args.manual_dir)
  specs = ([catalog.get(t) for t in args.tasks.split(",")] if args.tasks
           else datadir.present_tasks(manual_dir))
  if not specs:
    raise FileNotFoundError(f"{manual_dir}: no task files; run `invscale data download`")
  config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  for spec in specs:
    builder = dataset.InverseScalingPrize(config=spec.seqio_name, data_dir=args.tfds_data_dir)
    builder.download_and_prepare(download_config=config)
    print(f"{dataset.NAME}/{spec.seqio_name}: {builder.info.splits[dataset.SPLIT].num_examples} "
          f"examples in {builder.data_dir}")
  return 0


def register(subparsers: argparse._SubParsersAction) -> None:
  data = subparsers.add_parser("data", help="task data: status, validation, download")
  sub = data.add_subparsers(dest="data_command", required=True)
  dir_help = f"data directory (default: gin macro {datadir.ENV_VAR}, ${datadir.ENV_VAR}, {datadir.DEFAULT})"

  p = sub.add_parser("status", help="present / verified / missing, with row counts, per task")
  p.add_argument("--data_dir", help=dir_help)
  p.set_defaults(func=_status)

  p = sub.add_parser("validate", help="check task files (jsonl or Round-1 csv)")
  p.add_argument("files", nargs="+")
  p.add_argument("--strict", action="store_true", help="a file differing from its official sha256 is an error")
  p.set_defaults(func=_validate)

  p = sub.add_parser("download", help="fetch the official files, verified against their sha256")
  p.add_argument("--data_dir", help=dir_help)
  p.add_argument("--base_url", help=f"mirror carrying the official file names (default: "
                                    f"${download.URL_ENV_VAR} or {download.DEFAULT_BASE_URL})")
  p.add_argument("--tasks", help="comma-separated task names (default: all 11)")
  p.add_argument("--time_limit", type=float, default=download.TIME_LIMIT,
                 help="seconds allowed for each file in all (default: %(default)g)")
  p.set_defaults(func=_download)

  p = sub.add_parser("tfds-build", help="the TFDS dataset inverse_scaling_prize from the "
                                        "official files (what `tfds build` does)")
  p.add_argument("--manual_dir", help=f"the task files (default: as --data_dir: "
                                      f"{datadir.ENV_VAR}, {datadir.DEFAULT})")
  p.add_argument("--tfds_data_dir", help="where TFDS writes datasets (default: TFDS's own, "
                                         "~/tensorflow_datasets)")
  p.add_argument("--tasks", help="comma-separated task names (default: every file present)")
  p.set_defaults(func=_tfds_build)

  tasks = subparsers.add_parser("tasks", help="registered SeqIO tasks")
  sub = tasks.add_subparsers(dest="tasks_command", required=True)
  p = sub.add_parser("list", help="one registered task name per line")
  p.add_argument("--variants", help="also register these variants (e.g. 10_shot)")
  p.set_defaults(func=_tasks_list)

  p = sub.add_parser("lengths", help="the TASK_FEATURE_LENGTHS a T5X run needs so that SeqIO "
                                     "cuts no row of a task")
  p.add_argument("task", help="invscale:<task>.<variant> or <task>.<variant>, e.g. neqa.1_shot")
  p.add_argument("--vocabulary", help="the model's vocabulary: a SentencePiece .model file, a "
                                      "tokenizer.json, or a JSON spec (default: bytes)")
  p.add_argument("--data_dir", help=dir_help)
  p.add_argument("--seed", type=int, default=0, help="few-shot sampling seed")
  p.add_argument("--max_length", type=int, default=2048,
                 help="prompt budget in tokens, as INVSCALE_MAX_LENGTH (0: no cap)")
  p.add_argument("--encoder_eos", action="store_true",
                 help="count the EOS an encoder-decoder model's inputs end with (T5X's "
                      "EncoderDecoderModel, as INVSCALE_ENCODER_EOS)")
  p.set_defaults(func=_tasks_lengths)
