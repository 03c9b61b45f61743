"""What a run's numbers are, read off its run.json: the subset of examples it holds, what
was cut to fit `max_length`, its dtype and prompt conventions, and whether its model was
trained.

`invscale results`, INDEX.md and the report all show these beside the numbers, so a
`--limit` run or truncated prompts never pass for a full, whole-prompt result.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from invscale_jax import catalog


def _int(value: Any) -> int | None:
  return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclasses.dataclass(frozen=True)
class RunCaveats:
  """What a reader of a run's numbers must know (from run.json; absent fields: unknown)."""

  n_examples: int | None  # examples the run holds
  n_task: int | None  # examples the task has (None: unknown)
  limit: int  # --limit N (0: none)
  n_truncated: int  # examples whose prompt lost its start to fit max_length
  n_demos_dropped: int  # demonstrations left out to fit max_length
  max_length: int | None
  dtype: str | None  # activation dtype ("float32" or "bfloat16")
  bos_id: int | None
  has_bos: bool  # run.json says what precedes prompts (older runs: unknown)
  encoder_eos: bool | None = None  # encoder-decoder runs: EOS after the encoder input
  trained: bool | None = None  # False: the model's weights are random

  @property
  def subset(self) -> bool:
    """The run holds only some of the task's examples (`--limit`)."""
    if self.limit <= 0 or self.n_examples is None:
      return False
    return self.n_task is None or self.n_examples < self.n_task

  @property
  def truncated(self) -> bool:
    return self.n_truncated > 0 or self.n_demos_dropped > 0

  @property
  def marked(self) -> bool:
    """Its points are marked on the plot: a subset, or prompts cut to fit."""
    return self.subset or self.truncated


def _n_task(info: Mapping[str, Any]) -> int | None:
  """The task's example count: run.json's, else the release's when the data is official."""
  n = _int(info.get("n_task_examples"))
  if n is not None:
    return n
  try:
    spec = catalog.get(str(info.get("task")))
  except KeyError:
    return None
  return spec.reported_rows if info.get("data_sha256") == spec.sha256 else None


def from_run_info(info: Mapping[str, Any]) -> RunCaveats:
  """The caveats of a run from its run.json (fields of other types count as unknown)."""
  options = info.get("options") if isinstance(info.get("options"), dict) else {}
  model = info.get("model") if isinstance(info.get("model"), dict) else {}
  dtype = options.get("dtype")
  encoder_eos = info.get("encoder_eos")
  trained = model.get("trained")
  return RunCaveats(
      n_examples=_int(info.get("n_examples")), n_task=_n_task(info),
      limit=_int(options.get("limit")) or 0, n_truncated=_int(info.get("n_truncated")) or 0,
      n_demos_dropped=_int(info.get("n_demos_dropped")) or 0,
      max_length=_int(info.get("max_length")), dtype=dtype if isinstance(dtype, str) else None,
      bos_id=_int(info.get("bos_id")), has_bos="bos_id" in info,
      encoder_eos=encoder_eos if isinstance(encoder_eos, bool) else None,
      trained=trained if isinstance(trained, bool) else None)


def _count(n: int, noun: str) -> str:
  return f"{n} {noun}{'' if n == 1 else 's'}"


def _items(c: RunCaveats) -> list[tuple[str, str]]:
  """Each caveat as (a sentence for the report, a few characters for the results table)."""
  out = []
  if c.subset:
    of = f" of {c.n_task}" if c.n_task is not None else ""
    out.append((f"a subset: {c.n_examples}{of} examples (--limit {c.limit})",
                f"subset {c.n_examples}/{c.n_task}" if c.n_task is not None
                else f"first {c.n_examples} (--limit)"))
  within = f" to fit {c.max_length} tokens" if c.max_length else ""
  if c.n_truncated:
    out.append((f"{_count(c.n_truncated, 'prompt')} truncated{within}",
                f"{c.n_truncated} truncated"))
  if c.n_demos_dropped:
    out.append((f"{_count(c.n_demos_dropped, 'demonstration')} dropped{within}",
                f"{c.n_demos_dropped} demos dropped"))
  if c.trained is False:
    out.append(("untrained model (manifest: trained false)", "untrained"))
  return out


def notes(c: RunCaveats) -> list[str]:
  """Sentences for the report: subset, truncation, untrained weights."""
  return [long for long, _ in _items(c)]


def short_notes(c: RunCaveats) -> list[str]:
  """The same, in a few characters each, for the results table."""
  return [short for _, short in _items(c)]


_DTYPES = {"float32": "fp32", "bfloat16": "bf16"}


def setup(c: RunCaveats) -> str:
  """dtype and prompt conventions, e.g. "fp32, BOS 0" or "bf16, no BOS"."""
  parts = [_DTYPES.get(c.dtype, c.dtype or "dtype ?")]
  parts.append("BOS ?" if not c.has_bos else "no BOS" if c.bos_id is None else f"BOS {c.bos_id}")
  if c.encoder_eos is not None:
    parts.append("encoder EOS" if c.encoder_eos else "no encoder EOS")
  return ", ".join(parts)
