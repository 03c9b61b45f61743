"""The SeqIO score metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from seqio_tasks import metrics

# Two examples, rows deliberately out of order:
#   example 4: classes scored [-1, -2], answer 0 -> right;
#     loss = -log(e^-1 / (e^-1 + e^-2)) = log(1 + e^-1) = 0.313261687518...
#   example 9: classes scored [-3, -1, -2], answer 2 -> argmax is 1, wrong;
#     loss = 2 + log(e^-3 + e^-1 + e^-2) = 2 - 1 + log(1 + e^-2 + e^-1) = 1.407605964...
TARGETS = [(9, 2, 2), (4, 1, 0), (9, 0, 2), (4, 0, 0), (9, 1, 2)]
SCORES = [-2.0, -2.0, -3.0, -1.0, -1.0]
LOSS_4 = 0.31326168751822286
LOSS_9 = 1.4076059644443804


def test_accuracy_groups_rows_by_example() -> None:
  assert metrics.accuracy(TARGETS, SCORES) == {"accuracy": 0.5}


def test_classification_loss_by_hand() -> None:
  assert LOSS_4 == pytest.approx(math.log1p(math.exp(-1)), rel=1e-12)
  result = metrics.classification_loss(TARGETS, SCORES)
  assert set(result) == {"classification_loss"}
  assert result["classification_loss"] == pytest.approx((LOSS_4 + LOSS_9) / 2, rel=1e-12)


def test_all_right_and_all_wrong() -> None:
  targets = [(0, 0, 1), (0, 1, 1), (1, 0, 0), (1, 1, 0)]
  assert metrics.accuracy(targets, [-5.0, -0.5, -0.1, -7.0]) == {"accuracy": 1.0}
  assert metrics.accuracy(targets, [-0.5, -5.0, -7.0, -0.1]) == {"accuracy": 0.0}


def test_a_tie_at_the_top_goes_to_the_lowest_index() -> None:
  """The report's default rule, the prize's np.argmax: the first tied class is predicted."""
  tie = [-1.5, -1.5]
  assert metrics.accuracy([(0, 0, 0), (0, 1, 0)], tie) == {"accuracy": 1.0}
  assert metrics.accuracy([(0, 0, 1), (0, 1, 1)], tie) == {"accuracy": 0.0}
  assert metrics.accuracy([(0, 1, 1), (0, 0, 1)], tie[::-1]) == {"accuracy": 0.0}
  # Equal scores: the loss is log 2 whichever class is right.
  loss = metrics.classification_loss([(0, 0, 1), (0, 1, 1)], tie)["classification_loss"]
  assert loss == pytest.approx(math.log(2), rel=1e-12)


def test_loss_is_stable_for_very_negative_scores() -> None:
  """Summed log-probabilities of long classes can be -1e4; the loss must not overflow."""
  loss = metrics.classification_loss([(0, 0, 1), (0, 1, 1)], [-10000.0, -10003.0])
  assert loss["classification_loss"] == pytest.approx(3 + math.log1p(math.exp(-3)), rel=1e-12)
  assert metrics.accuracy([(0, 0, 1), (0, 1, 1)], [-10000.0, -10003.0]) == {"accuracy": 0.0}


def test_no_length_normalisation() -> None:
  """Scores are used as given: a class with more tokens is not favoured or penalised."""
  assert metrics.accuracy([(0, 0, 0), (0, 1, 0)], [-4.0, -3.9]) == {"accuracy": 0.0}


def test_sequence_loss_is_mean_negative_log_probability() -> None:
  targets = [(0, -1, -1), (1, -1, -1), (2, -1, -1)]
  assert metrics.sequence_loss(targets, [-2.0, -4.0, -0.5]) == {"sequence_loss": 6.5 / 3}


def test_metric_tuples() -> None:
  assert metrics.CLASSIFICATION_METRICS == (metrics.accuracy, metrics.classification_loss)
  assert metrics.SEQUENCE_METRICS == (metrics.sequence_loss,)
