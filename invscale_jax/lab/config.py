"""The lab's settings: what is planted (`WorldConfig`), how models train (`TrainConfig`)
and their shapes (`ModelSpec`). Plain dataclasses (no JAX), so the CLI reads defaults fast."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """What is planted. Shares are of training segments and must sum to 1."""

  seed: int = 0
  n_words: int = 32  # content words (phrase words and endings)
  n_famous: int = 32  # famous phrases, each with a fixed ending
  famous_length: tuple[int, int] = (3, 5)  # min, max words of a famous phrase
  phrase_length: tuple[int, int] = (2, 5)  # min, max words of a random phrase
  distractor: float = 0.5
  rule: float = 0.3
  filler: float = 0.2
  paired: float = 0.05  # share of rule segments on a famous phrase
  n_test: int = 256  # items per test task

  def __post_init__(self):
    shares = (self.distractor, self.rule, self.filler, self.paired)
    if min(shares) < 0 or abs(self.distractor + self.rule + self.filler - 1) > 1e-9:
      raise ValueError("lab: --distractor, --rule and --filler must be >= 0 and sum to 1")
    if not 0 <= self.paired <= 1:
      raise ValueError(f"lab: --paired must be in [0, 1], got {self.paired}")
    if self.n_words < 4 or self.n_famous < 2 or self.n_test < 2:
      raise ValueError("lab: needs at least 4 words, 2 famous phrases and 2 test items")
    for name in ("famous_length", "phrase_length"):
      low, high = getattr(self, name)
      if not 1 <= low <= high:
        raise ValueError(f"lab: {name}: need 1 <= min <= max, got {low}, {high}")
    if self.n_words ** self.famous_length[1] < 4 * self.n_famous:
      raise ValueError("lab: too few words for that many distinct famous phrases")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One model of the family: its shape and how long it trains."""

  name: str
  num_layers: int
  emb_dim: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  steps: int


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimiser and data settings shared by the family's models."""

  seed: int = 0  # initialisation and the order of training text (the world has its own)
  batch: int = 32  # rows per step
  length: int = 48  # tokens per row (BOS, then segments)
  lr: float = 3e-3  # peak learning rate
  warmup: float = 0.1  # share of the steps with a linear warm-up
  final_lr: float = 0.1  # cosine decays to this share of the peak
  b1: float = 0.9
  b2: float = 0.98
  eps: float = 1e-8
  weight_decay: float = 0.01  # decoupled, on every parameter

  def __post_init__(self):
    if self.batch < 1 or self.length < 2 or not self.lr > 0 or not 0 < self.warmup < 1:
      raise ValueError("lab: training needs batch >= 1, length >= 2, lr > 0 and 0 < warmup < 1")

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)
