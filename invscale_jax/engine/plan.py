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
from typing import TYPE_CHECKING, Any, Sequence

import gin

from invscale_jax import catalog, records, results, storage
from invscale_jax import vocab_spec
from invscale_jax.data import datadir
from invscale_jax.data import variants as variants_lib
from invscale_jax.engine import packing, runkey
from invscale_jax.family import Family, ModelEntry
from invscale_jax.convert.configs import load_config

if TYPE_CHECKING:
  from invscale_jax.data.task_rows import Encoder
  from invscale_jax.engine.requests import Request

TOKENIZATIONS = ("separate", "joint")
DTYPES = ("float32", "bfloat16")
PREFETCH = ("auto", "on", "off")


def _is_int(value: Any, minimum: int) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _option_problems(o: "ScoringOptions") -> list[tuple[str, str]]:
  """(field, what is wrong) for every invalid option."""
  checks = [
      ("tokenization", o.tokenization in TOKENIZATIONS, f"must be one of {TOKENIZATIONS}"),
      ("bos", isinstance(o.bos, str) and (o.bos in ("model", "none") or o.bos.isdigit()),
       "must be 'model' (the model's convention), 'none' or a token id"),
      ("max_length", _is_int(o.max_length, 2), "must be an integer >= 2"),
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
       for name in ("token_logprobs", "cot_score", "generate", "pack")]
  return [(name, problem) for name, ok, problem in checks if not ok]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ScoringOptions:
  """Options of a scoring run (bind in gin/runs/score.gin; flags override)."""

  tokenization: str = "separate"  # or "joint" (the prize pipeline's convention)
  bos: str = "model"  # token before each prompt: the model's convention, "none" or an id
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
  tokens_per_batch: int = 8192  # speed only; 0: as many rows as fit in device memory
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

  def key_parts(self, variant: variants_lib.Variant) -> dict:
    """The options that determine a run's numbers (CoT options only for CoT variants)."""
    d = dataclasses.asdict(self)
    # bos and max_length are resolved per model (Run.bos_id, Run.max_length).
    drop = ["bos", "max_length", "chunk_size", "tokens_per_batch", "pack", "model_parallel",
            "prefetch"]
    if not (variant.chain_of_thought or self.generate):
      drop += ["generation_length", "temperature", "cot_score"]
    if self.generate:
      drop += ["cot_score", "token_logprobs"]
    return {k: v for k, v in d.items() if k not in drop}


@dataclasses.dataclass(frozen=True)
class Run:
  entry: ModelEntry
  task: catalog.TaskSpec
  variant: variants_lib.Variant
  key: str
  info: dict
  bos_id: int | None
  max_length: int  # ScoringOptions.max_length, or less for a model with fewer positions

  def dir(self, out: str) -> str:
    return results.run_dir(out, self.key)

  @property
  def label(self) -> str:
    return f"{self.entry.name} {self.task.name}.{self.variant.name} (run {self.key})"


def plan(family: Family, models: Sequence[str] | None, tasks: Sequence[str],
         variants: Sequence[str], data_dir: str, options: ScoringOptions) -> list[Run]:
  """The runs to do, each with its content-hashed key and run.json contents."""
  entries = [family.get(m) for m in models] if models else list(family.models)
  specs = [catalog.get(t) for t in tasks]
  parsed = [variants_lib.parse(v) for v in variants]
  missing = [s.name for s in specs if not storage.is_file(datadir.task_path(data_dir, s))]
  if missing:
    raise FileNotFoundError(f"{data_dir}: no task file for {', '.join(missing)}; "
                            f"run `invscale data download --data_dir {data_dir}`")
  data_hash = {s.name: datadir.sha256_of(datadir.task_path(data_dir, s)) for s in specs}
  runs = []
  for entry in entries:  # the cheap checks of the entry's inputs first, the checkpoint last
    config = load_config(entry.gin)
    network = runkey.network_identity(config)
    # Learned position tables (OPT, GPT-2) bound the sequence a model can read.
    max_length = min(options.max_length, config.max_positions or options.max_length)
    vocabulary = vocab_spec.identity(entry.vocabulary)
    checkpoint = runkey.checkpoint_identity(entry.checkpoint)
    bos_id = options.bos_id(entry)
    for spec in specs:
      for variant in parsed:
        parts = {"model": entry.name, "checkpoint": checkpoint, "network": network,
                 "vocabulary": vocabulary, "bos_id": bos_id, "max_length": max_length,
                 "task": spec.name, "data_sha256": data_hash[spec.name],
                 "variant": variant.name, "options": options.key_parts(variant)}
        key = runkey.run_key(parts)
        info = dict(parts, run_key=key, engine_version=runkey.ENGINE_VERSION,
                    family=family.name, model=entry.to_dict())
        runs.append(Run(entry, spec, variant, key, info, bos_id, max_length))
  return runs


def generates(options: ScoringOptions, run: Run) -> bool:
  """Whether a run decodes: CoT variants (or every run with `generate`) of
  classification tasks; sequence-probability tasks are always scored."""
  return ((run.variant.chain_of_thought or options.generate)
          and run.task.metric == catalog.CLASSIFICATION)


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


def requests_for(run: Run, tokenizer: Encoder, options: ScoringOptions, data_dir: str,
                 store: bool = True) -> list[Request]:
  """A run's requests: its task's rows under its variant, tokenized with the model's
  tokenizer (no TensorFlow), the first `limit` examples (few-shot demonstrations are still
  drawn from all of them); cached by content (`request_cache`; written to the cache
  directory if `store`), so another model with the same vocabulary, or a re-run, builds
  nothing."""
  # pylint: disable=g-import-not-at-top
  from invscale_jax.data import task_rows
  from invscale_jax.engine import request_cache, requests
  o = options
  prompt = task_rows.PromptOptions(o.seed, run.max_length,
                                   o.generation_length if generates(o, run) else 0)
  parts = {k: v for k, v in run.info.items() if k not in request_cache.MODEL_PARTS}
  parts.update(options={k: v for k, v in o.key_parts(run.variant).items() if k != "dtype"},
               prompt=dataclasses.asdict(prompt))

  def build() -> list[Request]:
    encoder = requests.MemoEncoder(tokenizer)
    rows = task_rows.rows_for(run.task, run.variant, encoder, prompt, data_dir)
    return requests.from_task_rows(rows, encoder, o.tokenization, run.max_length, run.bos_id,
                                   o.limit or None)
  return request_cache.cached(parts, build, store)


def run_info(run: Run, options: ScoringOptions, requests: Sequence[Request]) -> dict[str, Any]:
  """run.json: the run's key parts, what it holds and what was cut to fit max_length."""
  return dict(run.info, n_examples=len(requests), n_rows=sum(len(r.branches) for r in requests),
              n_records=n_records(options, run, requests),
              record_kinds=record_kinds(options, run),
              n_truncated=sum(r.n_truncated > 0 for r in requests),
              n_demos_dropped=sum(r.n_demos_dropped for r in requests))

