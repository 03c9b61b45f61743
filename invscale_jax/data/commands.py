"""`invscale data status|validate|download` and `invscale tasks list|lengths`; the
`--task_dirs` flag of every command that takes task names."""

from __future__ import annotations

import argparse
import sys

from typing import Sequence

from invscale_jax import catalog, checks, storage, task_registry
from invscale_jax.data import datadir, declarations, download, loader, variants


def add_task_dirs_flag(p: argparse.ArgumentParser) -> None:
  p.add_argument("--task_dirs", metavar="DIR[,DIR...]",
                 help="comma-separated directories of your own tasks (<name>.task.json "
                      "declarations; README: Your own tasks)")


def use_task_dirs(flag: str | None, manifest_dirs: Sequence[str] = ()) -> None:
  """Declares the tasks of `--task_dirs`, a manifest's task_dirs, then the directories gin
  and the environment name (`task_registry`)."""
  task_registry.use([d for d in (flag or "").split(",") if d] + list(manifest_dirs)
                    + task_registry.environment_dirs())


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


def _files_to_validate(path: str) -> list[tuple[str, str | None, str | None]]:
  """(file, metric, task) to check for a path: a task file, or a task directory or
  declaration (`<name>.task.json`), whose task files are checked as declared."""
  task_dir = storage.is_dir(path) and any(n.endswith(declarations.SUFFIX)
                                          for n in storage.children(path))
  if not (path.endswith(declarations.SUFFIX) or task_dir):
    return [(path, None, None)]
  tasks = declarations.read_dir(path) if task_dir else [declarations.read(path)]
  return [(t.file_path(), t.metric, t.name) for t in tasks]


def _validate(args: argparse.Namespace) -> int:
  failed = False
  for given in args.files:
    try:
      files = _files_to_validate(given)
    except declarations.DeclarationError as e:
      print(e, file=sys.stderr)
      failed = True
      continue
    for path, metric, task in files:
      failed |= _validate_file(path, metric, task, args.strict)
  return 1 if failed else 0


def _validate_file(path: str, metric: str | None, task: str | None, strict: bool) -> bool:
  """Checks one task file, printing its problems; whether it failed."""
  failed = False
  examples, problems = loader.check(path, metric, task)
  for p in problems:
    print(p, file=sys.stderr)
  spec = catalog.by_filename(storage.basename(path))
  hash_note = ""
  if spec is not None and not problems:
    if datadir.sha256_of(path) == spec.sha256:
      hash_note = ", matches the official sha256"
    else:
      line = f"{path}:0: sha256: differs from the official {spec.filename}"
      print(("error: " if strict else "warning: ") + line, file=sys.stderr)
      failed |= strict
  if problems:
    failed = True
    print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
  else:
    print(f"{path}: {len(examples)} rows OK{hash_note}")
  return failed


def _prize_task(name: str) -> catalog.TaskSpec:
  spec = task_registry.parse(name)[0]
  if not spec.prize:
    raise ValueError(f"--tasks: {spec.name} is not a prize task; there is nothing to download")
  return spec


def _download(args: argparse.Namespace) -> int:
  root = datadir.resolve(args.data_dir)
  specs = [_prize_task(t) for t in args.tasks.split(",")] if args.tasks else list(catalog.TASKS)
  if not args.time_limit > 0:
    raise ValueError(f"--time_limit must be a positive number of seconds, got {args.time_limit}")
  errors = download.download(root, download.base_url(args.base_url), specs,
                             time_limit=args.time_limit)
  for e in errors:
    print(f"invscale: error: {e}", file=sys.stderr)
  return 1 if errors else 0


def _tasks_list(args: argparse.Namespace) -> int:
  use_task_dirs(args.task_dirs)
  import seqio_tasks  # pylint: disable=g-import-not-at-top

  extra = [v for v in (args.variants or "").split(",") if v]
  names = {n for v in dict.fromkeys(seqio_tasks.tasks.VARIANTS + tuple(extra))
           for n in seqio_tasks.register_variant(v)}
  for name in sorted(names):
    print(name)
  return 0


def _tasks_lengths(args: argparse.Namespace) -> int:
  use_task_dirs(args.task_dirs)
  spec, variant_name = task_registry.parse(args.task)
  variant = variants.parse(variant_name or "zero_shot")
  import seqio_tasks  # pylint: disable=g-import-not-at-top
  from invscale_jax import vocab, vocab_spec  # pylint: disable=g-import-not-at-top
  from seqio_tasks import lengths  # pylint: disable=g-import-not-at-top

  vocabulary = vocab.from_spec(vocab_spec.spec_of(args.vocabulary or "byte"))
  options = seqio_tasks.tasks.PromptOptions(args.seed, args.max_length or None)
  task = seqio_tasks.build_task(spec.name, variant.name, vocabulary, options,
                                str(datadir.resolve(args.data_dir)), args.encoder_eos)
  print(f"TASK_FEATURE_LENGTHS = {lengths.max_lengths(task)!r}")
  return 0


def _tasks_show(args: argparse.Namespace) -> int:
  """Prints one example as the model sees it: the built prompt (demonstrations included),
  then its classes (the answer marked) or its completion."""
  use_task_dirs(args.task_dirs)
  spec, variant_name = task_registry.parse(args.task)
  variant = variants.parse(variant_name or "zero_shot")
  examples = datadir.load_task(datadir.resolve(args.data_dir), spec.name)
  if not 0 <= args.example < len(examples):
    raise ValueError(f"--example: {spec.name} has examples 0 to {len(examples) - 1}, "
                     f"got {args.example}")
  if args.vocabulary:
    from invscale_jax import vocab, vocab_spec  # pylint: disable=g-import-not-at-top  (SeqIO)
    vocabulary = vocab.from_spec(vocab_spec.spec_of(args.vocabulary))
    count = lambda text: len(vocabulary.encode(text))
  else:
    count = lambda text: len(text.encode("utf-8"))  # seqio.ByteVocabulary's tokens
  query = examples[args.example]
  reserve = args.generation_length if variant.chain_of_thought else 0
  fitted = variants.build_prompt(examples, query, variant, args.seed,
                                 args.max_length or None, count, reserve)
  print(f"{spec.name}.{variant.name} example {query.example_id} of {len(examples)} "
        f"(demonstrations: {fitted.n_demos} kept, {fitted.n_dropped} dropped; prompt: "
        f"{count(fitted.text)} tokens of {args.vocabulary or 'bytes'})")
  print("--- prompt ---")
  print(fitted.text)
  if args.max_length:
    longest = max(count(t) for t in (query.classes or (query.completion,)))
    budget = args.max_length - 1 - longest - reserve
    if count(fitted.text) > budget:
      print(f"--- {count(fitted.text) - budget} tokens over the budget of {budget} (max_length "
            f"- BOS - longest target{' - generation' if reserve else ''}): the prompt's "
            f"start is cut when scored (a record's n_truncated) ---")
  if query.classes:
    print(f"--- classes (* the answer, index {query.answer_index}) ---")
    for i, c in enumerate(query.classes):
      print(f"{'*' if i == query.answer_index else ' '} {i}: {c!r}")
  else:
    print("--- completion (scored: its summed log-probability) ---")
    print(repr(query.completion))
  if variant.chain_of_thought:
    print(f"(the model then generates up to {args.generation_length} tokens; the answer is "
          f"read after the last \"So the answer is\")")
  return 0


def _tfds_build(args: argparse.Namespace) -> int:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from invscale_jax.data import inverse_scaling_prize as dataset  # pylint: disable=g-import-not-at-top
  manual_dir = datadir.resolve(args.manual_dir)
  specs = ([_prize_task(t) for t in args.tasks.split(",")] if args.tasks
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

  p = sub.add_parser("validate", help="check task files (jsonl or Round-1 csv), or your own "
                                      "task directories / <name>.task.json declarations")
  p.add_argument("files", nargs="+", metavar="FILE",
                 help="task files, local or gs:// (.jsonl, or a Round-1 .csv), or task "
                      "directories / <name>.task.json declarations")
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

  tasks = subparsers.add_parser("tasks", help="the prize tasks: registered SeqIO names, one "
                                             "example as built, feature lengths")
  sub = tasks.add_subparsers(dest="tasks_command", required=True)
  p = sub.add_parser("list", help="one registered task name per line")
  p.add_argument("--variants", help="also register these variants (e.g. 10_shot)")
  add_task_dirs_flag(p)
  p.set_defaults(func=_tasks_list)

  p = sub.add_parser("show", help="one example as the model sees it: the built prompt "
                                  "(demonstrations included) and its classes")
  p.add_argument("task", metavar="TASK.VARIANT",
                 help="a task and prompt variant, e.g. memo-trap.1_shot or "
                      "invscale:memo_trap.zero_shot")
  add_task_dirs_flag(p)
  p.add_argument("--example", type=checks.int_flag(0), default=0,
                 help="the example's 0-based row in the task file (default: %(default)s)")
  p.add_argument("--vocabulary", help="count tokens with the model's vocabulary: a "
                                      "SentencePiece .model file, a tokenizer.json, or a JSON "
                                      "spec (default: bytes)")
  p.add_argument("--data_dir", help=dir_help)
  p.add_argument("--seed", type=checks.int_flag(0), default=0,
                 help="few-shot sampling seed, as `score --seed` (default: %(default)s)")
  p.add_argument("--max_length", type=checks.int_flag(0), default=2048,
                 help="token budget, as `score --max_length`: demonstrations that do not fit "
                      "are dropped (0: no cap; default: %(default)s)")
  p.add_argument("--generation_length", type=checks.int_flag(0), default=128,
                 help="CoT: tokens kept free for the generation (default: %(default)s)")
  p.set_defaults(func=_tasks_show)

  p = sub.add_parser("lengths", help="the TASK_FEATURE_LENGTHS a T5X run needs so that SeqIO "
                                     "cuts no row of a task")
  p.add_argument("task", help="invscale:<task>.<variant>, <task>.<variant> (e.g. neqa.1_shot) "
                              "or <task> (zero_shot)")
  add_task_dirs_flag(p)
  p.add_argument("--vocabulary", help="the model's vocabulary: a SentencePiece .model file, a "
                                      "tokenizer.json, or a JSON spec (default: bytes)")
  p.add_argument("--data_dir", help=dir_help)
  p.add_argument("--seed", type=checks.int_flag(0), default=0, help="few-shot sampling seed")
  p.add_argument("--max_length", type=checks.int_flag(0), default=2048,
                 help="prompt budget in tokens, as INVSCALE_MAX_LENGTH (0: no cap; "
                      "default: %(default)s)")
  p.add_argument("--encoder_eos", action="store_true",
                 help="count the EOS an encoder-decoder model's inputs end with (T5X's "
                      "EncoderDecoderModel, as INVSCALE_ENCODER_EOS)")
  p.set_defaults(func=_tasks_lengths)
