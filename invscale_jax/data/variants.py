"""Prompt variants: how an example's prompt is built.

- `zero_shot`: the prompt as released.
- `<k>_shot` (any k >= 1): the prize's few-shot protocol. k demonstrations are sampled
  without replacement from the other examples of the same task (never the query, nor an
  example with the same prompt), each completed with its correct answer, and joined to the
  query with three newlines. The sample depends only on (seed, example id), so it is the
  same whatever order, batch or host the example is processed in. `1_shot` is Wei et al.'s.
- `cot_1_shot`: one worked demonstration (the task's exemplar, see `cot.py`) whose answer is
  preceded by a rationale, then the query; the model generates (Wei et al.'s 1-shot CoT).
- `cot_zero_shot`: the query followed by "Let's think step by step."; the model generates.

Length policy (`fit`): when a prompt is too long, demonstrations are dropped, farthest from
the query first, before the query itself is ever cut; both are counted.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Sequence

import numpy as np

from invscale_jax.catalog import DEMO_SEPARATOR
from invscale_jax.data import cot
from invscale_jax.data.loader import Example

_K_SHOT = re.compile(r"^(\d+)_shot$")


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  k_shot: int  # sampled demonstrations (0 for zero-shot and CoT variants)
  chain_of_thought: bool = False  # the model generates a rationale and an answer

  @property
  def worked_exemplar(self) -> bool:
    return self.name == "cot_1_shot"


def parse(name: str) -> Variant:
  """A variant by name; anything unknown is an error naming the variant."""
  if name == "zero_shot":
    return Variant(name, 0)
  if name in ("cot_zero_shot", "cot_1_shot"):
    return Variant(name, 0, chain_of_thought=True)
  match = _K_SHOT.match(name)
  if match and int(match.group(1)) >= 1:
    return Variant(name, int(match.group(1)))
  raise ValueError(f"variant: unknown prompt variant {name!r} (use zero_shot, <k>_shot "
                   f"with k >= 1, cot_zero_shot or cot_1_shot)")


def demonstrations(examples: Sequence[Example], query: Example, k: int, seed: int) -> list[Example]:
  """k demonstrations for `query`, sampled without replacement, deterministic in
  (seed, example id) for a given task file. Draws k + a few spare indices (O(k) per query)
  and skips the query and examples with its prompt; falls back to the full candidate
  list only when the draw came up short."""
  if k == 0:
    return []
  rng = np.random.default_rng([seed, query.example_id])
  allowed = lambda e: e.example_id != query.example_id and e.prompt != query.prompt
  drawn = rng.choice(len(examples), size=min(len(examples), k + 8), replace=False)
  picked = [examples[i] for i in drawn if allowed(examples[i])][:k]
  if len(picked) == k:
    return picked
  candidates = [e for e in examples if allowed(e)]
  if len(candidates) < k:
    raise ValueError(f"{query.task}: {k}-shot needs {k} other examples, only {len(candidates)} exist")
  return [candidates[i] for i in rng.choice(len(candidates), size=k, replace=False)]


def render(demos: Sequence[str], query: str) -> str:
  """Completed demonstrations then the query, three newlines apart."""
  return DEMO_SEPARATOR.join([*demos, query])


@dataclasses.dataclass(frozen=True)
class Fitted:
  text: str
  n_demos: int  # demonstrations kept
  n_dropped: int  # demonstrations dropped to fit the length budget


def fit(demos: Sequence[str], query: str, budget: int | None,
        count_tokens: Callable[[str], int]) -> Fitted:
  """Drops demonstrations (farthest first) until the prompt is at most `budget` tokens.

  The query is never cut here; if it alone exceeds the budget the caller truncates its
  tokens and counts that.
  """
  demos = list(demos)
  dropped = 0
  text = render(demos, query)
  while budget is not None and demos and count_tokens(text) > budget:
    demos.pop(0)
    dropped += 1
    text = render(demos, query)
  return Fitted(text, len(demos), dropped)


def prompt_parts(examples: Sequence[Example], query: Example, variant: Variant,
                 seed: int) -> tuple[list[str], str]:
  """(completed demonstrations, query text) of one example under `variant`."""
  if variant.chain_of_thought:
    if not variant.worked_exemplar:
      return [], cot.cot_zero_shot_prompt(query.prompt)
    return [cot.demonstration(cot.load_exemplar(query.task))], query.prompt
  demos = demonstrations(examples, query, variant.k_shot, seed)
  return [d.prompt + d.answer for d in demos], query.prompt


def build_prompt(examples: Sequence[Example], query: Example, variant: Variant, seed: int,
                 max_length: int | None, count_tokens: Callable[[str], int],
                 reserve: int = 0) -> Fitted:
  """The prompt of `query` (one of `examples`) under `variant`, leaving room within
  `max_length` tokens for a BOS token, its longest target and `reserve` more (e.g.
  generated tokens)."""
  budget = None
  if max_length is not None:
    longest = max(count_tokens(t) for t in (query.classes or (query.completion,)))
    budget = max_length - 1 - longest - reserve
  return fit(*prompt_parts(examples, query, variant, seed), budget, count_tokens)


def build_prompts(examples: Sequence[Example], variant: Variant, seed: int,
                  max_length: int | None, count_tokens: Callable[[str], int],
                  reserve: int = 0) -> list[Fitted]:
  """The prompt of every example under `variant` (see `build_prompt`)."""
  return [build_prompt(examples, e, variant, seed, max_length, count_tokens, reserve)
          for e in examples]
