"""Packed, branched scoring equals scoring each (prompt, class) row alone, for every
architecture; and the attention mask follows the segment/causal/branch rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invscale_jax.models.model import build
from invscale_jax.models.masks import Mask

ARCHITECTURES = ("decoder_only", "gpt_neox", "opt", "llama", "gpt2", "encoder_decoder")


def _examples(text_examples, vocab_size: int) -> list[tuple[list[int], list[list[int]]]]:
  """Token ids as seqio.ByteVocabulary gives them (byte + 3)."""
  ids = lambda text: [(b + 3) % vocab_size for b in text.encode("utf-8")]
  return [(ids(prompt), [ids(c) for c in classes]) for prompt, classes in text_examples]


def test_attention_mask_rules():
  segments = jnp.array([[1, 1, 1, 1, 2, 2, 0]])
  branches = jnp.array([[0, 1, 2, 2, 0, 1, 0]])
  mask = np.asarray(Mask(segments, segments, branches, branches, causal=True).dense())[0, 0]
  expected = np.array([
      [1, 0, 0, 0, 0, 0, 0],
      [1, 1, 0, 0, 0, 0, 0],
      [1, 0, 1, 0, 0, 0, 0],  # branch 2 does not see branch 1
      [1, 0, 1, 1, 0, 0, 0],
      [0, 0, 0, 0, 1, 0, 0],  # segment 2 does not see segment 1
      [0, 0, 0, 0, 1, 1, 0],
      [0, 0, 0, 0, 0, 0, 0],  # padding sees nothing
  ], bool)
  np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_packed_branches_match_separate_rows(architecture, small_model, small_model_config,
                                             text_examples, pack_rows):
  model, params = small_model(architecture)
  examples = _examples(text_examples[:3], model.config.vocab_size)
  encoder_decoder = architecture == "encoder_decoder"
  # Examples 0 and 1 share row 0 (segments 1 and 2); example 2 has row 1 to itself.
  packed, packed_slots = pack_rows([examples[:2], examples[2:]], encoder_decoder)
  separate, separate_slots = pack_rows(
      [[(prompt, [c])] for prompt, classes in examples for c in classes], encoder_decoder,
      branched=False)
  packed_scores = np.asarray(jax.jit(model.score)(params, packed))
  separate_scores = np.asarray(jax.jit(model.score)(params, separate))
  assert len(packed_slots) == len(separate_slots) == sum(len(c) for _, c in examples)
  for (r, s, n), (r2, s2, n2) in zip(packed_slots, separate_slots):
    assert n == n2
    np.testing.assert_allclose(packed_scores[r, s:s + n], separate_scores[r2, s2:s2 + n],
                               rtol=0, atol=1e-5)
  targets = packed["target_mask"] == 1
  assert np.all(packed_scores[~targets] == 0) and np.all(packed_scores[targets] < 0)

  # The shipped configs compute activations in bfloat16: same scores up to rounding.
  bf16_model = build(small_model_config(architecture, dtype="bfloat16"))
  bf16_scores = jax.jit(bf16_model.score)(params, packed)
  assert bf16_scores.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(bf16_scores)[targets], packed_scores[targets], rtol=0.05)
