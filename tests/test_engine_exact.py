"""The engine's scores equal the brute-force reference on real task data, for every
architecture, whatever the batch size, and under both tokenization conventions."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest
import seqio

import seqio_tasks
from invscale_jax import vocab as vocab_lib
from invscale_jax.engine import partitioning, reference, requests
from invscale_jax.engine.scorer import Scorer
from invscale_jax.data import datadir

ARCHITECTURES = ("decoder_only", "gpt_neox", "opt", "llama", "gpt2", "encoder_decoder")
# float32: summation order differs between padded shapes, so allow 1e-5 absolute plus
# 2e-6 relative (a wrong mask or position would be off by ~1e-1).
ATOL, RTOL = 1e-5, 2e-6
MAX_LENGTH = 512


def task_requests(data_dir: pathlib.Path, task: str, variant: str, n: int,
                  vocabulary: seqio.Vocabulary | None = None, tokenization: str = "separate",
                  max_length: int = MAX_LENGTH, bos_id: int | None = None
                  ) -> list[requests.Request]:
  vocabulary = vocabulary or seqio.ByteVocabulary()
  options = seqio_tasks.tasks.PromptOptions(seed=0, max_length=max_length)
  task_ = seqio_tasks.build_task(task, variant, vocabulary, options, str(data_dir))
  return requests.from_task(task_, vocabulary, tokenization, max_length, bos_id)[:n]


@pytest.fixture(scope="module")
def mixed_requests(shared_data: pathlib.Path) -> list[requests.Request]:
  """Short prompts (memo-trap), long prompts cut to max_length (hindsight-neglect), and
  1-shot prompts (neqa)."""
  return (task_requests(shared_data, "memo-trap", "zero_shot", 12)
          + task_requests(shared_data, "hindsight-neglect", "zero_shot", 4)
          + task_requests(shared_data, "neqa", "1_shot", 6))


def assert_same(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert len(x) == len(y)
    for u, v in zip(x, y):
      assert u.shape == v.shape and u.size > 0
      np.testing.assert_allclose(u, v, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_engine_equals_brute_force(architecture, small_model, mixed_requests):
  model, params = small_model(architecture)
  expected = reference.score(model, params, mixed_requests, length=MAX_LENGTH, batch_size=16)
  mesh = partitioning.make_mesh()
  for tokens_per_batch in (512, 8192):
    got = Scorer(model, params, mesh, tokens_per_batch).score(mixed_requests)
    assert_same(got, expected)


@pytest.mark.parametrize("bos_id", [None, 0])
def test_long_prompts_are_truncated_from_the_left_keeping_the_bos(shared_data, bos_id):
  hindsight = task_requests(shared_data, "hindsight-neglect", "zero_shot", 4, bos_id=bos_id)
  assert all(r.n_truncated for r in hindsight), "prompts are longer than MAX_LENGTH bytes"
  for r in hindsight:
    longest = max(len(b.target) for b in r.branches)
    assert len(r.prefix) + longest == MAX_LENGTH
    prompt = r.prefix if bos_id is None else r.prefix[1:]
    assert bos_id is None or r.prefix[0] == bos_id
    assert r.prompt_text.encode("utf-8")[-len(prompt):] == bytes(t - 3 for t in prompt)


@pytest.fixture(scope="module")
def merging_tokenizer(tmp_path_factory, shared_data) -> seqio.Vocabulary:
  """A BPE tokenizer without whitespace pre-tokenization, so merges cross the boundary
  between a prompt and its class (as they can in the prize's joint tokenization)."""
  import tokenizers  # pylint: disable=g-import-not-at-top

  texts = [e.prompt + c for e in datadir.load_task(shared_data, "memo-trap")[:300]
           for c in e.classes]
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
  trainer = tokenizers.trainers.BpeTrainer(vocab_size=380, special_tokens=["<|endoftext|>"])
  tokenizer.train_from_iterator(texts, trainer)
  path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
  tokenizer.save(str(path))
  return vocab_lib.HfTokenizerVocabulary(path)


def test_joint_tokenization_differs_and_stays_exact(small_model, shared_data, merging_tokenizer):
  joint = task_requests(shared_data, "memo-trap", "zero_shot", 40, merging_tokenizer, "joint")
  separate = task_requests(shared_data, "memo-trap", "zero_shot", 40, merging_tokenizer)
  differs = [i for i, (j, s) in enumerate(zip(joint, separate))
             if not np.array_equal(j.prefix, s.prefix)
             or any(not np.array_equal(a.target, b.target) for a, b in zip(j.branches, s.branches))]
  assert len(differs) > 10, "merges across the prompt/class boundary change the tokens"
  # Class-specific contexts (what a merge at the boundary of only some classes gives):
  # move the last prompt tokens into the second class's branch.
  moved = [dataclasses.replace(r, prefix=r.prefix[:-2], branches=(
      dataclasses.replace(r.branches[0], context=r.prefix[-2:]),
      dataclasses.replace(r.branches[1], context=np.concatenate([r.prefix[-2:], [5]]))))
      for r in joint[:8]]
  model, params = small_model("decoder_only")
  scorer = Scorer(model, params, partitioning.make_mesh(), 1024)
  for reqs in (joint, moved):
    assert_same(scorer.score(reqs), reference.score(model, params, reqs, length=MAX_LENGTH,
                                                    batch_size=16))
  got_joint, got_separate = scorer.score(joint), scorer.score(separate)
  i = differs[0]
  assert any(len(a) != len(b) or not np.allclose(a, b)
             for a, b in zip(got_joint[i], got_separate[i])), "the conventions give other scores"


def test_models_of_one_configuration_share_their_compiled_step(small_model, mixed_requests):
  """A second model of the same network (other parameters) reuses the first one's traced
  and compiled programs, and still gets its own scores."""
  import jax  # pylint: disable=g-import-not-at-top
  from invscale_jax.models.model import Model  # pylint: disable=g-import-not-at-top

  model, params = small_model("decoder_only")
  other_params = jax.tree.map(lambda p: p * 0.5, params)
  mesh = partitioning.make_mesh()
  reqs = mixed_requests[:12]
  first = Scorer(model, params, mesh, 2048)
  want_first = first.score(reqs)
  compiled = first._score._cache_size()  # pylint: disable=protected-access
  second = Scorer(Model(model.config), other_params, mesh, 2048)
  assert second._score is first._score  # pylint: disable=protected-access
  got = second.score(reqs)
  assert first._score._cache_size() == compiled  # pylint: disable=protected-access
  assert_same(got, reference.score(model, other_params, reqs, length=MAX_LENGTH, batch_size=16))
  assert not np.allclose(got[0][0], want_first[0][0])
