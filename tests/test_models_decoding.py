"""Cached decoding equals recomputation from scratch, with prompts of different lengths
in one batch, for every architecture."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from invscale_jax.models.decoding import greedy_decode, jitted, pad_prompts, prompt_batch

ARCHITECTURES = ("decoder_only", "gpt_neox", "opt", "llama", "gpt2", "encoder_decoder")
PROMPTS = ([5, 17, 42], [7, 8, 9, 10, 11, 12, 13], [100, 3, 250, 31, 9])
STEPS = 6


def _pad(rows: list[list[int]], width: int) -> dict[str, np.ndarray]:
  """Right-padded tokens and lengths of rows, `width` wide so that every step has one shape."""
  tokens, lengths = pad_prompts(rows)
  return {"tokens": np.pad(tokens, ((0, 0), (0, width - tokens.shape[1]))), "lengths": lengths}


def _recomputed_logits(model, params, prompts: list[list[int]],
                       generated: np.ndarray) -> list[np.ndarray]:
  """Next-token logits [B, V] after each generated prefix, each from a fresh prefill."""
  prefill, _ = jitted(model)
  width = max(map(len, prompts)) + generated.shape[1]
  logits = []
  for step in range(generated.shape[1]):
    if model.architecture == "encoder_decoder":
      batch = {**prompt_batch(model, prompts),
               **_pad([[0] + list(g[:step]) for g in generated], width)}
    else:
      batch = _pad([p + list(g[:step]) for p, g in zip(prompts, generated)], width)
    logits.append(np.asarray(prefill(params, batch, width)[0]))
  return logits


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_cached_decoding_matches_recomputation(architecture, small_model, pack_rows):
  model, params = small_model(architecture)
  prompts = [list(p) for p in PROMPTS]
  tokens, log_probs = greedy_decode(model, params, prompts, STEPS)
  assert tokens.shape == log_probs.shape == (len(prompts), STEPS)

  # Teacher-force the greedy tokens through the cache and compare every step's logits.
  batch = prompt_batch(model, prompts)
  prefill, step = jitted(model)  # compiled by greedy_decode for these shapes
  logits, cache = prefill(params, batch, batch["tokens"].shape[1] + STEPS - 1)
  for t, expected in enumerate(_recomputed_logits(model, params, prompts, tokens)):
    if t:
      logits, cache = step(params, cache, tokens[:, t - 1])
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(tokens[:, t], expected.argmax(-1))

  # The scoring path (no cache at all) gives the same log-probabilities.
  encoder_decoder = architecture == "encoder_decoder"
  score_batch, slots = pack_rows([[(p, [list(g)])] for p, g in zip(prompts, tokens)],
                                 encoder_decoder, branched=False)
  scores = np.asarray(jax.jit(model.score)(params, score_batch))
  for (row, start, n), expected in zip(slots, log_probs):
    np.testing.assert_allclose(scores[row, start:start + n], expected, rtol=0, atol=1e-5)
