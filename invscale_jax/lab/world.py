"""The distractor lab's world: a seeded vocabulary of words, famous phrases, training text
and test items (Wei et al.'s distractor-task account of U-shaped scaling, planted).

Training text is a stream of segments, each ending with `.`:
  distractor  `P_k > X_k .`         one of `n_famous` fixed phrases with its fixed ending;
  rule        `R y p_1 .. p_L > y .`  "end the phrase with y", on a random phrase;
  filler      `p_1 .. p_L > z .`      a random phrase with a random ending.
A share `paired` of the rule segments uses a famous phrase (default 5%: the rule is seen to
override a memorised ending, rarely).

Test items (classification, prize format, chance exactly 0.5):
  lab-conflict  `R X_j P_k >`  classes X_j (the rule; the answer) and X_k (memorised);
  lab-rule      `R y p >`      on a random phrase: classes y and another word;
  lab-memo      `P_k >`        classes X_k and another word.
"""

from __future__ import annotations

import json
from typing import Iterator

import numpy as np

from invscale_jax.lab.config import WorldConfig

BOS = "<|endoftext|>"  # id 0: pad, BOS (T5X shifts in id 0) and EOS
RULE, ARROW, END = "R", ">", "."
TASKS = ("lab-conflict", "lab-rule", "lab-memo")
# The prize's demonstration separator (three newlines) becomes a segment end, so a k-shot
# prompt reads like training text: `R y p > y . R z q >`.
SEPARATOR = "\n\n\n"


class World:
  """The words, the famous phrases and their endings of one `WorldConfig`."""

  def __init__(self, config: WorldConfig):
    self.config = config
    self.words = [f"w{i}" for i in range(config.n_words)]
    self.tokens = [BOS, RULE, ARROW, END, *self.words]
    self.ids = {t: i for i, t in enumerate(self.tokens)}
    rng = np.random.default_rng([config.seed, 0])
    famous: dict[tuple[int, ...], int] = {}
    while len(famous) < config.n_famous:
      phrase = self._phrase(rng, config.famous_length)
      famous.setdefault(phrase, int(rng.integers(config.n_words)))
    self.famous = list(famous)
    self.endings = [famous[p] for p in self.famous]
    self._famous_set = set(famous)

  def _phrase(self, rng: np.random.Generator, length: tuple[int, int]) -> tuple[int, ...]:
    n = int(rng.integers(length[0], length[1] + 1))
    return tuple(int(w) for w in rng.integers(self.config.n_words, size=n))

  def random_phrase(self, rng: np.random.Generator) -> tuple[int, ...]:
    """A phrase that is not famous (word indices)."""
    while True:
      phrase = self._phrase(rng, self.config.phrase_length)
      if phrase not in self._famous_set:
        return phrase

  def _random_phrases(self, rng: np.random.Generator, n: int) -> list[tuple[int, ...]]:
    """`n` phrases that are not famous (word indices)."""
    low, high = self.config.phrase_length
    lengths = rng.integers(low, high + 1, size=n)
    words = rng.integers(self.config.n_words, size=(n, high))
    phrases = [tuple(int(w) for w in row[:k]) for row, k in zip(words, lengths)]
    return [p if p not in self._famous_set else self.random_phrase(rng) for p in phrases]

  def segments(self, rng: np.random.Generator, n: int) -> list[list[int]]:
    """`n` training segments (token ids), drawn together."""
    cfg, ids = self.config, self.ids
    word = [ids[w] for w in self.words]
    kinds = rng.choice(3, size=n, p=[cfg.distractor, cfg.rule, cfg.filler])
    famous = rng.integers(cfg.n_famous, size=n)
    ends = rng.integers(cfg.n_words, size=n)
    paired = rng.random(n) < cfg.paired
    phrases = self._random_phrases(rng, n)
    out = []
    for kind, k, end, pair, phrase in zip(kinds, famous, ends, paired, phrases):
      if kind == 0:
        end, phrase = self.endings[k], self.famous[k]
      elif kind == 1 and pair:
        phrase = self.famous[k]
      body = [word[i] for i in phrase] + [ids[ARROW], word[end], ids[END]]
      out.append([ids[RULE], word[end]] + body if kind == 1 else body)
    return out

  def batch(self, seed: int, step: int, rows: int, length: int) -> np.ndarray:
    """int32 [rows, length] of training text for `step`: each row BOS then segments,
    cut at `length`. Depends only on (seed, step)."""
    rng = np.random.default_rng([seed, step])
    per_row = -(-length // (self.config.phrase_length[0] + 3)) + 1  # enough to fill a row
    segments = self.segments(rng, rows * per_row)
    out = np.empty((rows, length), np.int32)
    for r in range(rows):
      row = [0]
      for segment in segments[r * per_row:(r + 1) * per_row]:
        row += segment
      out[r] = row[:length]
    return out

  def _other(self, rng: np.random.Generator, not_: int) -> int:
    other = int(rng.integers(self.config.n_words - 1))
    return other + (other >= not_)

  def _items(self, task: str) -> Iterator[tuple[str, int, int]]:
    """(prompt, answer word, other word) of each test item of `task`."""
    cfg, w = self.config, self.words
    rng = np.random.default_rng([cfg.seed, 1 + TASKS.index(task)])
    for i in range(cfg.n_test):
      k = i % cfg.n_famous  # every famous phrase equally often
      phrase = " ".join(w[j] for j in self.famous[k])
      if task == "lab-conflict":
        x = self._other(rng, self.endings[k])
        yield f"{RULE} {w[x]} {phrase} {ARROW}", x, self.endings[k]
      elif task == "lab-memo":
        yield f"{phrase} {ARROW}", self.endings[k], self._other(rng, self.endings[k])
      else:
        y = int(rng.integers(cfg.n_words))
        random_phrase = " ".join(w[j] for j in self.random_phrase(rng))
        yield f"{RULE} {w[y]} {random_phrase} {ARROW}", y, self._other(rng, y)

  def test_rows(self, task: str) -> list[dict]:
    """The prize-format classification rows of `task` (answer first or second at random)."""
    rng = np.random.default_rng([self.config.seed, 10 + TASKS.index(task)])
    rows = []
    for prompt, answer, other in self._items(task):
      classes = [f" {self.words[answer]}", f" {self.words[other]}"]
      first = int(rng.integers(2))
      if first:
        classes.reverse()
      rows.append({"prompt": prompt, "classes": classes, "answer_index": first})
    return rows

  def tokenizer_json(self) -> str:
    """A word-level `tokenizers` tokenizer.json of the world's tokens (split at
    whitespace); the prize's demonstration separator is read as a segment end."""
    data = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 0, "content": BOS, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": {"type": "Replace", "pattern": {"String": SEPARATOR},
                       "content": f" {END} "},
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": None,
        # "<unk>" is not in the vocabulary: a word outside the world is an error.
        "model": {"type": "WordLevel", "vocab": self.ids, "unk_token": "<unk>"},
    }
    return json.dumps(data, indent=1) + "\n"
