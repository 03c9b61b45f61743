"""Per-example metrics against hand-computed values (the prize's definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from invscale_jax import records
from invscale_jax.report import bootstrap
from invscale_jax.report import metrics
from invscale_jax.report.errors import ReportError


def rec(example_id, class_index, n_classes, answer, logprob, kind=records.CLASS, n_tokens=1,
        n_bytes=1, **kw):
  correct = None if answer is None or class_index is None else class_index == answer
  return records.Record(
      run_key="k", model="m", task="memo-trap", variant="zero_shot", example_id=example_id,
      kind=kind, class_index=class_index, n_classes=n_classes, answer_index=answer,
      logprob=logprob, n_tokens=n_tokens, n_bytes=n_bytes,
      is_correct=kw.pop("is_correct", correct), **kw)


def classification_records():
  return [
      # example 0: s = [-1, -2], answer 0 -> right; class 1 has 4 tokens
      rec(0, 0, 2, 0, -1.0, n_tokens=1, n_bytes=2), rec(0, 1, 2, 0, -2.0, n_tokens=4, n_bytes=8),
      # example 1: s = [-3, -1, -1], answer 1 -> two-way tie at the top incl. the answer:
      # argmax gives it to class 1 (right), fractional scores 1/2
      rec(1, 0, 3, 1, -3.0), rec(1, 1, 3, 1, -1.0), rec(1, 2, 3, 1, -1.0),
      # example 2: s = [-0.5, -0.1], answer 0 -> wrong
      rec(2, 1, 2, 0, -0.1), rec(2, 0, 2, 0, -0.5),
  ]


def test_classification_by_hand():
  em = metrics.example_metrics(classification_records())
  assert em.example_ids.tolist() == [0, 1, 2]
  np.testing.assert_allclose(em.values["accuracy"], [1.0, 1.0, 0.0])
  fractional = metrics.example_metrics(classification_records(), ties="fractional")
  np.testing.assert_allclose(fractional.values["accuracy"], [1.0, 0.5, 0.0])
  # loss = -log p_norm(correct) = logsumexp(s) - s[answer]
  np.testing.assert_allclose(em.values["loss"], [
      math.log(1 + math.exp(-1)),  # -log(e^-1 / (e^-1 + e^-2))
      math.log(2 + math.exp(-2)),  # -log(e^-1 / (e^-3 + 2 e^-1))
      math.log(1 + math.exp(0.4)),  # -log(e^-0.5 / (e^-0.5 + e^-0.1))
  ])
  # total probability mass on the classes: logsumexp(s)
  np.testing.assert_allclose(em.values["total_logprob"], [
      math.log(math.exp(-1) + math.exp(-2)), math.log(math.exp(-3) + 2 * math.exp(-1)),
      math.log(math.exp(-0.5) + math.exp(-0.1))])
  np.testing.assert_allclose(em.values["tie_rate"], [0, 1, 0])
  assert em.chance["accuracy"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
  assert em.chance["loss"] == pytest.approx((2 * math.log(2) + math.log(3)) / 3)
  assert em.answers.tolist() == [0, 1, 0] and em.n_classes.tolist() == [2, 3, 2]
  assert "accuracy_per_token" not in em.values  # length normalisation is never the default


def test_length_normalised_extras():
  em = metrics.example_metrics(classification_records(), normalise=("token", "byte"))
  # example 0 per token: s = [-1/1, -2/4] -> class 1 wins; per byte: [-1/2, -2/8] -> class 1
  assert em.values["accuracy_per_token"][0] == 0.0
  assert em.values["loss_per_token"][0] == pytest.approx(math.log(1 + math.exp(0.5)))
  assert em.values["loss_per_byte"][0] == pytest.approx(math.log(1 + math.exp(0.25)))
  np.testing.assert_allclose(em.values["accuracy"], [1.0, 1.0, 0.0])  # unchanged


def test_tie_rules():
  """By default a tie goes to the lowest class index, as the prize's np.argmax did;
  "fractional" does not favour the first class. Both count the tie."""
  recs = [rec(0, 0, 2, 0, -1.0), rec(0, 1, 2, 0, -1.0), rec(1, 0, 2, 1, -1.0),
          rec(1, 1, 2, 1, -1.0), rec(2, 0, 3, 2, -2.0), rec(2, 1, 3, 2, -1.0),
          rec(2, 2, 3, 2, -1.0)]
  argmax = metrics.example_metrics(recs)
  np.testing.assert_allclose(argmax.values["accuracy"], [1.0, 0.0, 0.0])
  assert metrics.example_metrics(recs, ties="argmax").values["accuracy"].tolist() == [1, 0, 0]
  fractional = metrics.example_metrics(recs, ties="fractional", normalise=("token",))
  np.testing.assert_allclose(fractional.values["accuracy"], [0.5, 0.5, 0.5])
  np.testing.assert_allclose(fractional.values["accuracy_per_token"], [0.5, 0.5, 0.5])
  for em in (argmax, fractional):
    np.testing.assert_allclose(em.values["tie_rate"], [1, 1, 1])
  with pytest.raises(ValueError, match="ties: 'random' is not one of argmax, fractional"):
    metrics.example_metrics(recs, ties="random")


def test_sequence_loss():
  recs = [rec(0, None, 1, None, -12.5, kind=records.SEQUENCE, n_tokens=5, n_bytes=25),
          rec(1, None, 1, None, -7.5, kind=records.SEQUENCE, n_tokens=3, n_bytes=10)]
  em = metrics.example_metrics(recs, normalise=("token",))
  assert em.values["loss"].mean() == pytest.approx(10.0)  # -sum log p, averaged
  np.testing.assert_allclose(em.values["loss_per_token"], [2.5, 2.5])
  assert em.answers is None and "accuracy" not in em.values and em.chance == {}


def gen(example_id, answer, class_index, parsed):
  return rec(example_id, class_index, 2, answer, None, kind=records.GENERATION,
             generation="... so the answer is", parsed=parsed,
             is_correct=None if class_index is None else class_index == answer)


def test_chain_of_thought():
  gens = [gen(0, 0, 0, True), gen(1, 1, 0, True), gen(2, 0, None, False)]
  em = metrics.example_metrics(gens)
  np.testing.assert_allclose(em.values["accuracy"], [1, 0, 0])  # unparseable counts wrong
  np.testing.assert_allclose(em.values["unparseable_rate"], [0, 0, 1])
  assert "loss" not in em.values  # no class scores -> no loss
  scored = [rec(i, c, 2, a, lp) for i, a in ((0, 0), (1, 1), (2, 0))
            for c, lp in ((0, -1.0), (1, -2.0))]
  em = metrics.example_metrics(gens + scored)
  np.testing.assert_allclose(em.values["accuracy"], [1, 0, 0])  # still from the generation
  assert em.values["loss"][1] == pytest.approx(math.log(1 + math.exp(1)))
  em = metrics.example_metrics(gens + scored[:4])  # class scores for 2 of 3 examples
  assert "loss" not in em.values


def test_incomplete_examples():
  recs = classification_records()[:-1]  # example 2 lost one class record
  with pytest.raises(ReportError, match="example 2: 1 of 2 class records"):
    metrics.example_metrics(recs)
  em = metrics.example_metrics(recs, strict=False)
  assert em.example_ids.tolist() == [0, 1] and em.n_dropped == 1


def test_bad_records():
  with pytest.raises(ReportError, match="two class records|bad class_index"):
    metrics.example_metrics(classification_records() + [rec(0, 1, 2, 0, -5.0)])
  with pytest.raises(ReportError, match="disagree"):
    metrics.example_metrics([rec(0, 0, 2, 0, -1.0), rec(0, 1, 2, 1, -1.0)])
  with pytest.raises(ReportError, match="mix record kinds"):
    metrics.example_metrics([rec(0, 0, 1, 0, -1.0),
                             rec(1, None, 1, None, -1.0, kind=records.SEQUENCE)])


def test_bootstrap_means_and_p_value():
  rng = np.random.default_rng(0)
  values = np.stack([np.arange(10.0), np.ones(10)], axis=1)
  draws = bootstrap.resample_means(values, 2000, rng)
  assert draws.shape == (2, 2000)
  np.testing.assert_allclose(draws[1], 1.0)  # a constant column resamples to itself
  assert draws[0].mean() == pytest.approx(4.5, abs=0.1)
  assert draws[0].std() == pytest.approx(np.std(np.arange(10.0)) / math.sqrt(10), rel=0.1)
  assert bootstrap.p_value(np.ones(999)) == pytest.approx(2 / 1000)
  assert bootstrap.p_value(np.zeros(999)) == 1.0
  a = bootstrap.resample_means(values, 5, bootstrap.rng_for(1, "x", "y"))
  np.testing.assert_array_equal(a, bootstrap.resample_means(values, 5,
                                                            bootstrap.rng_for(1, "x", "y")))
