"""Scoring throughput: the engine against a naive T5X-style baseline, and against the
matmul roofline, in one process.

For each model config and each real task file present in the data dir (zero-shot):
- engine: prefix-shared, packed, length-bucketed scoring (`Scorer`), blockwise attention
  on long rows (`attention.for_platform`); with `--dense` also the engine with dense attention
  everywhere (`attention.DENSE`), timed in turns with it;
- baseline: what T5X's score mode does: one row per class, every row padded to one fixed
  length (the task's longest row rounded up to a power of two, which favours the
  baseline), logits and log-softmax at every position (`reference.score`).
Everything is timed after a warm-up pass (compilation excluded); the engine runs
`--repeats` times, each time between two measurements of the float32 matmul peak, and
medians are reported. Engine and baseline must agree within 1e-5 (float32).

Printed per task: rows/s and tokens/s (tokens = prompt, with its BOS where the model has
one, + class of every row: the work a naive evaluation faces), the speedup over the baseline, and the engine's
essential FLOP/s: the work no correct evaluation can avoid, divided by the engine's time,
as a share of the matmul peak. Essential work: every prompt token and every branch token
(a class minus its last token) once through the matmuls (2 x non-embedding matmul
parameters: attention, MLP and projections, whatever their shapes, GQA included);
attention of each token over the keys it sees (4 x heads x head_dim per key and layer:
QK and AV, causal within its own example and branch); logits only at target tokens
(2 x vocab x width). Padding, masked-out attention and skipped work count for nothing.

What bounds the engine: the same batches' matmuls alone (every layer's kernels at the
batch's rows x length, padding included, and the logits at its target slots), timed as
one program per batch shape. Printed: their share of the engine's time, their rate as a
share of the peak (XLA's CPU matmuls at the model's 512-2048 widths reach less than the
2048-wide peak), and the rest of the engine's time (attention, norms, activations,
gathers), which the matmul rate does not cover.

  python benchmarks/score_throughput.py --data_dir ../shared/data/inverse_scaling
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import seqio

import seqio_tasks
from invscale_jax import family
from invscale_jax.models.config import load_config
from invscale_jax.models.model import Model, build
from invscale_jax.data import datadir
from invscale_jax.engine import packing, partitioning, reference, requests
from invscale_jax.engine.scorer import Scorer
from invscale_jax.engine.plan import ScoringOptions
from invscale_jax.models import attention

CONFIGS = {"tiny-4": "models/tiny/tiny_4.gin", "100m": "models/bench/100m.gin",
           "pythia-70m": "models/pythia/70m.gin"}


def matmul_peak(n: int = 2048, chain: int = 8) -> float:
  """float32 FLOP/s of n x n matmuls on the default device (a chain of `chain` in one
  program, so that no output is allocated between them)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  w = x / np.sqrt(n)
  f = jax.jit(lambda x, w: jax.lax.fori_loop(0, chain, lambda _, y: y @ w, x))
  f(x, w).block_until_ready()
  start = time.perf_counter()
  f(x, w).block_until_ready()
  return 2 * n**3 * chain / (time.perf_counter() - start)


def _matmul_params(model) -> tuple[int, int]:
  """(parameters of the matmuls every token goes through, width of the logits layer)."""
  shapes = model.param_shapes()["decoder"]
  kernels = [leaf.size for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)
             if path[-1].key == "kernel" and path[0].key != "logits_dense"]
  width = (shapes["logits_dense"]["kernel"].shape[0] if "logits_dense" in shapes
           else shapes["token_embedder"]["embedding"].shape[1])
  return sum(kernels), width


def essential_flops(model, reqs: list[requests.Request]) -> float:
  """The FLOPs no correct evaluation of `reqs` can avoid (see the module docstring)."""
  cfg = model.config
  if cfg.architecture == "encoder_decoder":
    raise ValueError("essential_flops counts decoder-only models")
  matmul, width = _matmul_params(model)
  tokens = keys = targets = 0
  for r in reqs:
    m = len(r.prefix)
    tokens += packing.decoder_length(r)
    keys += m * (m + 1) // 2  # prompt token p sees p + 1 keys
    for b in r.branches:
      n = len(b.context) + len(b.target) - 1
      keys += n * m + n * (n + 1) // 2
      targets += len(b.target)
  attention_flops = 4 * cfg.num_heads * cfg.head_dim * cfg.num_layers * keys
  return 2 * matmul * tokens + attention_flops + 2 * cfg.vocab_size * width * targets


def matmul_bound(model, params, reqs: list[requests.Request], tokens_per_batch: int
                 ) -> tuple[float, float]:
  """(seconds, FLOPs) of the engine's batches' matmuls alone: each layer's kernels (as
  [in, out] matrices) applied to rows x length tokens, and the logits at the target
  slots, one jitted program per batch shape, timed once after a warm-up."""
  decoder = params["decoder"]
  kernels = [leaf.reshape(leaf.shape[0], -1)
             for path, leaf in jax.tree_util.tree_leaves_with_path(decoder)
             if path[-1].key == "kernel" and path[0].key != "logits_dense"]
  logits = (decoder["logits_dense"]["kernel"] if "logits_dense" in decoder
            else decoder["token_embedder"]["embedding"].T)

  @jax.jit
  def products(xs: dict[int, jax.Array], hidden: jax.Array) -> list[jax.Array]:
    return [xs[k.shape[0]] @ k for k in kernels] + [hidden @ logits]

  shapes: dict[tuple[int, int], int] = {}
  for b in packing.make_batches(reqs, model.architecture, tokens_per_batch):
    shape = (b.arrays["tokens"].size, b.arrays["target_ids"].size)
    shapes[shape] = shapes.get(shape, 0) + 1
  seconds = flops = 0.0
  for (tokens, targets), count in shapes.items():
    xs = {n: jnp.ones((tokens, n), jnp.float32) for n in {k.shape[0] for k in kernels}}
    hidden = jnp.ones((targets, logits.shape[0]), jnp.float32)
    jax.block_until_ready(products(xs, hidden))
    seconds += count * timed(lambda: jax.block_until_ready(products(xs, hidden)))[0]
    flops += count * 2 * (tokens * sum(k.size for k in kernels) + targets * logits.size)
  return seconds, flops


def row_lengths(reqs: list[requests.Request]) -> list[int]:
  """Tokens of each (example, class) row: the prefix (BOS included) and the class."""
  return [len(r.prefix) + len(b.context) + len(b.target) for r in reqs for b in r.branches]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
  start = time.perf_counter()
  result = fn()
  return time.perf_counter() - start, result


def max_diff(got, want) -> float:
  return max(float(np.max(np.abs(a - b))) for x, y in zip(got, want) for a, b in zip(x, y))


def bench(name: str, model, params, reqs: list[requests.Request], tokens_per_batch: int,
          repeats: int, dense: bool) -> None:
  lengths = row_lengths(reqs)
  rows, tokens = len(lengths), sum(lengths)
  mesh = partitioning.make_mesh()
  engines = {"engine": Scorer(model, params, mesh, tokens_per_batch)}
  if dense:
    dense_model = Model(model.config, attention=attention.DENSE)
    engines["dense"] = Scorer(dense_model, params, mesh, tokens_per_batch)
  results = {k: e.score(reqs) for k, e in engines.items()}  # warm-up: compile every shape
  seconds: dict[str, list[float]] = {k: [] for k in engines}
  peaks = [matmul_peak()]
  for _ in range(repeats):
    for k, e in engines.items():
      seconds[k].append(timed(lambda: e.score(reqs))[0])
      peaks.append(matmul_peak())
  length = packing.bucket(max(lengths) - 1)  # the model reads all but a row's last token
  baseline_batch = max(1, tokens_per_batch // length)
  baseline = lambda: reference.score(model, params, reqs, length, baseline_batch)
  baseline()  # warm-up
  base_s, want = timed(baseline)
  worst = max(max_diff(got, want) for got in results.values())
  peak, flops = statistics.median(peaks), essential_flops(model, reqs)
  matmul_s, matmul_flops = matmul_bound(model, params, reqs, tokens_per_batch)
  line = f"{name:28s} rows {rows:4d} | baseline {tokens / base_s:7.0f} tok/s"
  for k, s in seconds.items():
    t = statistics.median(s)
    line += (f" | {k} {tokens / t:7.0f} tok/s {base_s / t:5.2f}x {flops / t / 1e9:6.1f} GFLOP/s"
             f" = {flops / t / peak:4.0%} of peak")
  engine_s = statistics.median(seconds["engine"])
  print(f"{line} | peak {peak / 1e9:.0f} GFLOP/s (range {min(peaks) / 1e9:.0f}-"
        f"{max(peaks) / 1e9:.0f}) | max |diff| {worst:.1e}\n{'':28s} bound: its matmuls "
        f"alone take {matmul_s:.2f} s of its {engine_s:.2f} s ({matmul_s / engine_s:.0%}), at "
        f"{matmul_flops / matmul_s / peak:.0%} of peak; attention, norms, activations and "
        f"gathers take the other {max(0.0, engine_s - matmul_s):.2f} s", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=str(pathlib.Path(__file__).resolve().parents[2]
                                                / "shared" / "data" / "inverse_scaling"))
  parser.add_argument("--configs", default="tiny-4,100m,pythia-70m")
  parser.add_argument("--tasks", help="comma-separated tasks (default: all present)")
  parser.add_argument("--examples", type=int, default=0,
                      help="examples per task (0: all for tiny-4, 16 for larger models)")
  parser.add_argument("--max_length", type=int, default=2048)
  parser.add_argument("--tokens_per_batch", type=int, default=ScoringOptions.tokens_per_batch)
  parser.add_argument("--repeats", type=int, default=3, help="timed engine runs (median)")
  parser.add_argument("--dense", action="store_true",
                      help="also time the engine with dense attention everywhere")
  args = parser.parse_args()
  data_dir = pathlib.Path(args.data_dir)
  tasks = args.tasks.split(",") if args.tasks else [s.name for s in datadir.present_tasks(data_dir)]
  print(f"devices: {jax.devices()}; tasks: {tasks}")
  vocabulary = seqio.ByteVocabulary()
  options = seqio_tasks.tasks.PromptOptions(seed=0, max_length=args.max_length)
  for config_name in args.configs.split(","):
    model = build(load_config(family.GIN_DIR / CONFIGS[config_name],
                              ["ModelConfig.dtype = 'float32'"]),
                  attention.for_platform(jax.default_backend()))
    params = model.init(jax.random.PRNGKey(0))
    limit = args.examples or (None if config_name == "tiny-4" else 16)
    bos_id = family.DEFAULT_BOS[model.architecture]
    print(f"\n{config_name}: {model.num_params():,} parameters, {limit or 'all'} examples per "
          f"task, BOS {bos_id}")
    for task in tasks:
      t = seqio_tasks.build_task(task, "zero_shot", vocabulary, options, str(data_dir))
      reqs = requests.from_task(t, vocabulary, max_length=args.max_length, bos_id=bos_id)[:limit]
      bench(f"{config_name} {task}", model, params, reqs, args.tokens_per_batch, args.repeats,
            args.dense)


if __name__ == "__main__":
  main()
