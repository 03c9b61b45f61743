"""Decoding throughput: cached decoding against full recomputation, in one process.

Greedy decoding of chain-of-thought prompts (memo-trap, cot_1_shot) by a decoder-only model:
- cached: the engine's `Generator` (one prefill, then one cached step per token);
- recompute: every step runs the whole sequence again (prompt + tokens so far, padded to
  one fixed length so it compiles once) and takes the last position's logits.
Both are timed after a warm-up and must produce the same tokens. Prints tokens/s of each
and the ratio.

  python benchmarks/decode_throughput.py --data_dir ../shared/data/inverse_scaling
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import seqio

import seqio_tasks
from invscale_jax import family
from invscale_jax.models.config import load_config
from invscale_jax.models.model import build
from invscale_jax.engine import generate, packing, partitioning, requests


def recompute(model, params, reqs, max_new: int) -> np.ndarray:
  """Greedy tokens [N, max_new], each step a full forward pass over the sequence so far."""
  length = packing.bucket(1 + max(len(r.prefix) for r in reqs)) + max_new
  arrays = generate._prompt_arrays(reqs, False, len(reqs), length)  # pylint: disable=protected-access
  step = jax.jit(lambda p, t, n: jnp.argmax(model.prefill(p, {"tokens": t, "lengths": n},
                                                          length)[0], -1))
  tokens, lengths = arrays["tokens"].copy(), arrays["lengths"].copy()
  out = np.zeros((len(reqs), max_new), np.int32)
  for t in range(max_new):
    out[:, t] = np.asarray(step(params, tokens, lengths))
    tokens[np.arange(len(reqs)), lengths] = out[:, t]
    lengths += 1
  return out


def timed(fn):
  fn()  # warm-up: compile
  start = time.perf_counter()
  result = fn()
  return time.perf_counter() - start, result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=str(pathlib.Path(__file__).resolve().parents[2]
                                                / "shared" / "data" / "inverse_scaling"))
  parser.add_argument("--config", default="models/tiny/tiny_4.gin")
  parser.add_argument("--prompts", type=int, default=16)
  parser.add_argument("--max_new_tokens", type=int, default=64)
  args = parser.parse_args()
  model = build(load_config(family.GIN_DIR / args.config, ["ModelConfig.dtype = 'float32'"]))
  params = model.init(jax.random.PRNGKey(0))
  vocabulary = seqio.ByteVocabulary()
  options = seqio_tasks.tasks.PromptOptions(0, 1024, args.max_new_tokens)
  task = seqio_tasks.build_task("memo-trap", "cot_1_shot", vocabulary, options, args.data_dir)
  reqs = requests.from_task(task, vocabulary, max_length=1024)[:args.prompts]
  generator = generate.Generator(model, params, partitioning.make_mesh(),
                                 generate.DecodeOptions(args.max_new_tokens),
                                 tokens_per_batch=len(reqs) * 1024)
  cached_s, cached = timed(lambda: np.stack(generator.generate(reqs)))
  full_s, full = timed(lambda: recompute(model, params, reqs, args.max_new_tokens))
  n = len(reqs) * args.max_new_tokens
  print(f"{args.config}: {model.num_params():,} params, {len(reqs)} prompts "
        f"({min(len(r.prefix) for r in reqs)}-{max(len(r.prefix) for r in reqs)} tokens), "
        f"{args.max_new_tokens} new tokens each, devices {jax.devices()}")
  print(f"cached decoding   {n / cached_s:9.1f} tokens/s")
  print(f"full recompute    {n / full_s:9.1f} tokens/s")
  print(f"speedup {full_s / cached_s:.1f}x; identical tokens: {np.array_equal(cached, full)}")


if __name__ == "__main__":
  main()
