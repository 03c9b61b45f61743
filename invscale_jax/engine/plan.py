"""What a scoring run will do: its options, and the runs (model x task x variant) it plans.

Planning reads manifests, configs and file hashes only. A run's requests are built from its
task rows with the model's own tokenizer (`requests_for`): scoring never imports SeqIO or
TensorFlow.

A `Run` is one model on one task under one prompt variant, with its run key: a content
hash of everything that determines its numbers (see `runkey`). `requests_for` builds a
run's requests from its task rows, tokenized with the model's vocabulary; `record_kinds`
and `n_records` say what records the engine will write for them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING, Any, Sequence

import gin

from invscale_jax import catalog, checks, records, results, storage, task_registry
from invscale_jax import vocab_spec
from invscale_jax.data import datadir, loader, sources, task_rows
from invscale_jax.data import variants as variants_lib
from invscale_jax.engine import packing, request_cache, runkey
from invscale_jax.engine import requests as requests_lib
from invscale_jax.engine.requests import Request
from invscale_jax.family import Family, ModelEntry
from invscale_jax.convert.configs import load_config

if TYPE_CHECKING:
  from invscale_jax.tokenizer import Tokenizer

TOKENIZATIONS = ("separate", "joint")
MAX_LENGTH = 1 << 20  # tokens of a sequence: far above any model's context
DTYPES = ("float32", "bfloat16")
PREFETCH = ("auto", "on", "off")


def _is_int(value: Any, minimum: int) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _option_problems(o: "ScoringOptions") -> list[tuple[str, str]]:
  """(field, what is wrong) for every invalid option."""
  rules = [
      ("tokenization", o.tokenization in TOKENIZATIONS, f"must be one of {TOKENIZATIONS}"),
      ("bos", isinstance(o.bos, str) and (o.bos in ("model", "none") or re.fullmatch(
          "[0-9]{1,18}", o.bos, re.ASCII) is not None),
       "must be 'model' (the model's convention), 'none' or a token id"),
      ("max_length", _is_int(o.max_length, 2) and o.max_length <= MAX_LENGTH,
       f"must be an integer from 2 to {MAX_LENGTH}"),
      ("seed", _is_int(o.seed, 0), "must be an integer >= 0"),
      ("dtype", o.dtype in DTYPES, f"must be one of {DTYPES}"),
      ("generation_length", _is_int(o.generation_length, 1), "must be an integer >= 1"),
      ("temperature", isinstance(o.temperature, (int, float)) and not isinstance(
          o.temperature, bool) and math.isfinite(o.temperature) and o.temperature >= 0,
       "must be a number >= 0 (0: greedy)"),
      ("limit", _is_int(o.limit, 0), "must be an integer >= 0 (0: every example)"),
      ("chunk_size", _is_int(o.chunk_size, 1), "must be an integer >= 1"),
      ("tokens_per_batch", _is_int(o.tokens_per_batch, 0),
       "must be an integer >= 0 (0: as many as fit in device memory)"),
      ("model_parallel", _is_int(o.model_parallel, 1), "must be an integer >= 1"),
      ("prefetch", o.prefetch in PREFETCH, f"must be one of {PREFETCH}"),
  ] + [(name, isinstance(getattr(o, name), bool), "must be true or false")
       for name in ("token_logprobs", "cot_score", "generate", "pack", "encoder_eos")]
  return [(name, problem) for name, ok, problem in rules if not ok]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ScoringOptions:
  """Options of a scoring run (bind in gin/runs/score.gin; flags override)."""

  tokenization: str = "separate"  # or "joint" (the prize pipeline's convention)
  bos: str = "model"  # token before each prompt: the model's convention, "none" or an id
  encoder_eos: bool = True  # encoder-decoder: EOS after the encoder input (unless the model's
  #                           manifest entry says encoder_eos false)
  max_length: int = 2048  # tokens, BOS + prompt + target (+ generation for CoT)
  seed: int = 0  # few-shot sampling and generation sampling seed
  dtype: str = "float32"  # activation dtype: float32 or bfloat16
  token_logprobs: bool = False  # keep per-token log-probabilities in the records
  generation_length: int = 128  # CoT: tokens generated per example
  temperature: float = 0.0  # CoT: 0 = greedy
  cot_score: bool = True  # CoT: also rank-classify the classes after the generated rationale
  generate: bool = False  # decode and parse every classification run, no scoring (`generate`)
  limit: int = 0  # score only the first `limit` examples of each task (0: all)
  chunk_size: int = 256  # examples per result chunk (speed only)
  tokens_per_batch: int = 4096  # speed only; 0: as many rows as fit in device memory
  #                               (4096: on CPUs a batch's activations stay in cache)
  pack: bool = True  # speed only: several examples per row
  model_parallel: int = 1  # speed only: devices each model is sharded over (the rest: data)
  prefetch: str = "auto"  # speed only: load the next model while one scores (auto: if it fits)

  def __post_init__(self):
    for name, problem in _option_problems(self):
      raise ValueError(f"--{name} (ScoringOptions.{name}): {problem}, got "
                       f"{getattr(self, name)!r}")

  def bos_id(self, entry: ModelEntry) -> int | None:
    """The token put before each prompt of `entry`'s model (None: nothing). Encoder-decoder
    prompts go to the encoder unchanged."""
    if entry.architecture == "encoder_decoder":
      return None
    if self.bos == "model":
      return entry.bos_id
    return None if self.bos == "none" else int(self.bos)

  def encoder_eos_for(self, entry: ModelEntry) -> bool | None:
    """Whether EOS ends the encoder input of `entry`'s model (None: not encoder-decoder)."""
    if entry.architecture != "encoder_decoder":
      return None
    return self.encoder_eos and entry.encoder_eos

  def key_parts(self, variant: variants_lib.Variant) -> dict:
    """The options that determine a run's numbers (CoT options only for CoT variants)."""
    d = dataclasses.asdict(self)
    # bos, encoder_eos and max_length are resolved per model (Run.bos_id, Run.encoder_eos,
    # Run.max_length).
    drop = ["bos", "encoder_eos", "max_length", "chunk_size", "tokens_per_batch", "pack",
            "model_parallel", "prefetch"]
    if not (variant.chain_of_thought or self.generate):
      drop += ["generation_length", "temperature", "cot_score"]
    if self.generate:
      drop += ["cot_score", "token_logprobs"]
    return {k: v for k, v in d.items() if k not in drop}


@dataclasses.dataclass(frozen=True)
class Run:
  entry: ModelEntry
  task: task_registry.Task
  variant: variants_lib.Variant
  key: str
  info: dict
  bos_id: int | None
  max_length: int  # ScoringOptions.max_length, or less for a model with fewer positions
  encoder_eos: bool | None = None  # EOS after the encoder input (None: decoder-only)

  def dir(self, out: str) -> str:
    return results.run_dir(out, self.key)

  @property
  def label(self) -> str:
    return f"{self.entry.name} {self.task.name}.{self.variant.name} (run {self.key})"


def _unique(items: Sequence[Any]) -> list[Any]:
  """`items` without repeats of a name, in order."""
  first: dict[str, Any] = {}
  for item in items:
    first.setdefault(item.name, item)
  return list(first.values())


def task_variants(tasks: Sequence[str], variants: Sequence[str]
                  ) -> list[tuple[task_registry.Task, variants_lib.Variant]]:
  """(task, variant) pairs: each task under every variant, or under the one its name fixes
  (`invscale:memo_trap.zero_shot`); unknown names fail here, before anything is read."""
  default = [variants_lib.parse(v) for v in variants]
  pairs = []
  for name in tasks:
    spec, variant = task_registry.parse(name)
    pairs += [(spec, v) for v in ([variants_lib.parse(variant)] if variant else default)]
  return list(dict.fromkeys(pairs))


def check_task_files(specs: Sequence[task_registry.Task], data_dir: str,
                     from_tfds: bool = False) -> None:
  """Every task file is there (a prize task's, unless read from the TFDS dataset); a
  declared task's file is valid (`FILE:LINE: FIELD: reason`)."""
  missing = [s.name for s in specs if s.prize and not from_tfds
             and not storage.is_file(datadir.task_path(data_dir, s))]
  if missing:
    raise FileNotFoundError(f"{data_dir}: no task file for {', '.join(missing)}; "
                            f"run `invscale data download --data_dir {data_dir}`")
  for spec in specs:
    if not spec.prize:
      problems = loader.check(datadir.task_path(data_dir, spec), spec.metric, spec.name)[1]
      if problems:
        more = (f" (and {len(problems) - 1} more: `invscale data validate "
                f"{spec.directory}`)" if len(problems) > 1 else "")
        raise loader.DataError([dataclasses.replace(problems[0], reason=problems[0].reason
                                                    + more)])


def plan(family: Family, models: Sequence[str] | None, tasks: Sequence[str],
         variants: Sequence[str], data_dir: str, options: ScoringOptions) -> list[Run]:
  """The runs to do, each with its content-hashed key and run.json contents. A task name
  with a variant (`memo_trap.zero_shot`) is run under that variant only."""
  # A name given twice (or two spellings of one task) is one run, planned once.
  entries = _unique([family.get(m) for m in models] if models else family.models)
  pairs = task_variants(tasks, variants)
  # The TFDS dataset holds the release's files, checked against their sha256 when built.
  from_tfds = sources.source() == sources.TFDS
  check_task_files(list(dict.fromkeys(s for s, _ in pairs)), data_dir, from_tfds)
  task_parts = {(s, v): datadir.key_parts(s, v, data_dir,
                                          s.sha256 if from_tfds and s.prize else None)
                for s, v in pairs}
  # A --limit run says of how many examples it holds the first N (shown as "N of M").
  n_task = {s.name: len(sources.load_examples(s, data_dir))
            for s in dict.fromkeys(s for s, _ in pairs)} if options.limit else {}
  runs = []
  for entry in entries:  # the cheap checks of the entry's inputs first, the checkpoint last
    config = load_config(entry.gin)
    network = runkey.network_identity(config)
    # Learned position tables (OPT, GPT-2) bound the sequence a model can read.
    max_length = min(options.max_length, config.max_positions or options.max_length)
    bos_id = checks.token_id(options.bos_id(entry), config.vocab_size,
                             f"{family.path}: model {entry.name}: bos_id" if options.bos == "model"
                             else "--bos (ScoringOptions.bos)")
    if options.generation_length >= max_length and any(
        _generates(options, spec, variant) for spec, variant in pairs):
      raise ValueError(f"--generation_length (ScoringOptions.generation_length): "
                       f"{options.generation_length} leaves no room for the prompt in "
                       f"model {entry.name}'s max_length {max_length}")
    vocabulary = vocab_spec.identity(entry.vocabulary)
    checkpoint = runkey.checkpoint_identity(entry.checkpoint)
    encoder_eos = options.encoder_eos_for(entry)
    for spec, variant in pairs:
      parts = {"model": entry.name, "checkpoint": checkpoint, "network": network,
               "vocabulary": vocabulary, "bos_id": bos_id, "max_length": max_length,
               **task_parts[(spec, variant)], "variant": variant.name,
               "options": options.key_parts(variant)}
      if encoder_eos is not None:  # decoder-only keys stay as they were
        parts["encoder_eos"] = encoder_eos
      key = runkey.run_key(parts)
      info = dict(parts, run_key=key, engine_version=runkey.ENGINE_VERSION,
                  family=family.name, model=entry.to_dict())
      if family.seed_group is not None:  # the report averages a design's seeds
        info["seed_group"] = {"seed_group": family.seed_group, "seed": family.seed}
      if not spec.prize:
        info["task_source"] = spec.directory
      if spec.name in n_task:
        info["n_task_examples"] = n_task[spec.name]
      runs.append(Run(entry, spec, variant, key, info, bos_id, max_length, encoder_eos))
  return runs


def generates(options: ScoringOptions, run: Run) -> bool:
  """Whether a run decodes: CoT variants (or every run with `generate`) of
  classification tasks; sequence-probability tasks are always scored."""
  return _generates(options, run.task, run.variant)


def _generates(options: ScoringOptions, task: catalog.TaskSpec,
               variant: variants_lib.Variant) -> bool:
  return (variant.chain_of_thought or options.generate) and task.metric == catalog.CLASSIFICATION


def scores_after_generating(options: ScoringOptions) -> bool:
  return options.cot_score and not options.generate


def record_kinds(options: ScoringOptions, run: Run) -> list[str]:
  """The records every example of `run` gets."""
  if generates(options, run):
    return [records.GENERATION] + ([records.CLASS] if scores_after_generating(options) else [])
  return [records.CLASS if run.task.metric == catalog.CLASSIFICATION else records.SEQUENCE]


def n_records(options: ScoringOptions, run: Run, requests: Sequence[Request]) -> int:
  """Records the engine writes for these requests (also its progress units)."""
  rows = sum(len(r.branches) for r in requests)
  if generates(options, run):
    return len(requests) + (rows if scores_after_generating(options) else 0)
  return rows


def work_tokens(options: ScoringOptions, run: Run, requests: Sequence[Request]) -> int:
  """Tokens to compute for `requests`: each prompt once and every branch, plus the tokens
  to generate for chain of thought (the unit of the throughput kept in COMPLETE)."""
  encoder_decoder = run.entry.architecture == "encoder_decoder"
  tokens = sum(packing.request_tokens(r, encoder_decoder) for r in requests)
  if generates(options, run):
    tokens += options.generation_length * len(requests)
  return tokens


def requests_for(run: Run, tokenizer: "Tokenizer", options: ScoringOptions, data_dir: str,
                 store: bool = True) -> list[Request]:
  """A run's requests: its task's rows under its variant, tokenized with the model's
  tokenizer (no TensorFlow), the first `limit` examples (few-shot demonstrations are still
  drawn from all of them); cached by content (`request_cache`; written to the cache
  directory if `store`), so another model with the same vocabulary, or a re-run, builds
  nothing."""
  o = options
  prompt = task_rows.PromptOptions(o.seed, run.max_length,
                                   o.generation_length if generates(o, run) else 0)
  parts = request_cache.request_parts(run.info)
  parts.update(options={k: v for k, v in o.key_parts(run.variant).items() if k != "dtype"},
               prompt=dataclasses.asdict(prompt))

  def build() -> list[Request]:
    encoder = requests_lib.MemoEncoder(tokenizer)
    rows = task_rows.rows_for(run.task, run.variant, encoder, prompt, data_dir)
    return requests_lib.from_task_rows(rows, encoder, o.tokenization, run.max_length,
                                       run.bos_id, o.limit or None, eos_id(run, tokenizer))
  return request_cache.cached(parts, build, store)


def eos_id(run: Run, tokenizer: "Tokenizer") -> int | None:
  """The token after the prompt: the tokenizer's EOS for an encoder input that ends so."""
  return tokenizer.eos_id if run.encoder_eos else None


def run_info(run: Run, options: ScoringOptions, requests: Sequence[Request]) -> dict[str, Any]:
  """run.json: the run's key parts, what it holds and what was cut to fit max_length."""
  return dict(run.info, n_examples=len(requests), n_rows=sum(len(r.branches) for r in requests),
              n_records=n_records(options, run, requests),
              record_kinds=record_kinds(options, run),
              n_truncated=sum(r.n_truncated > 0 for r in requests),
              n_demos_dropped=sum(r.n_demos_dropped for r in requests))

