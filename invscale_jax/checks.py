"""Checks of values that come from users (flags, manifests, config files), in one place.

Each turns a bad value into a one-line `ValueError` naming the flag or field, before
anything large is built or read: numbers written in ASCII digits within a stated range,
token ids inside a vocabulary, and text made safe for a terminal.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import pathlib
import re
import unicodedata
from typing import Any, Callable

# ASCII digits only: int() and float() also take other scripts' digits, "1_000" and spaces.
_INT = re.compile(r"[+-]?[0-9]{1,18}", re.ASCII)
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?", re.ASCII)


def _range(minimum: float | None, maximum: float | None) -> str:
  show = lambda x: str(x) if isinstance(x, int) else f"{x:g}"
  if minimum is not None and maximum is not None:
    return f"from {show(minimum)} to {show(maximum)}"
  return f">= {show(minimum)}" if minimum is not None else f"<= {show(maximum)}"


def integer(text: str, what: str, minimum: int | None = None,
            maximum: int | None = None) -> int:
  """`text` as an integer written in ASCII digits, within [minimum, maximum]."""
  bounds = "" if minimum is None and maximum is None else " " + _range(minimum, maximum)
  if not _INT.fullmatch(text):
    raise ValueError(f"{what}: must be an integer{bounds}, got {text!r}")
  value = int(text)
  if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
    raise ValueError(f"{what}: must be an integer{bounds}, got {text}")
  return value


def number(text: str, what: str, minimum: float, maximum: float) -> float:
  """`text` as a finite number written in ASCII, within [minimum, maximum]."""
  if not _FLOAT.fullmatch(text) or not minimum <= float(text) <= maximum:
    raise ValueError(f"{what}: must be a number {_range(minimum, maximum)}, got {text!r}")
  return float(text)


def _argparse_type(check: Callable[..., Any], name: str, **bounds) -> Callable[[str], Any]:
  """An argparse `type=`: argparse reports the message with the flag's name."""
  def parse(text: str) -> Any:
    try:
      return check(text, "value", **bounds)
    except ValueError as e:
      raise argparse.ArgumentTypeError(str(e).removeprefix("value: ")) from None
  parse.__name__ = name
  return parse


def int_flag(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
  """argparse type of an integer flag (ASCII digits, within the bounds)."""
  return _argparse_type(integer, "integer", minimum=minimum, maximum=maximum)


def float_flag(minimum: float, maximum: float) -> Callable[[str], float]:
  """argparse type of a finite number flag within [minimum, maximum]."""
  return _argparse_type(number, "number", minimum=minimum, maximum=maximum)


def path_flag(text: str) -> str:
  """argparse type of a path flag: not empty (an empty --out would mean the current
  directory)."""
  if not text.strip():
    raise argparse.ArgumentTypeError("must be a path, got an empty string")
  return text


def names(text: str | None, flag: str) -> list[str]:
  """A comma-separated list flag: None or "" gives []; an empty item is refused (`--model ,`
  would otherwise mean every model)."""
  if not text:
    return []
  items = [item.strip() for item in text.split(",")]
  if not all(items):
    raise ValueError(f"{flag}: empty name in {text!r}; give comma-separated names")
  return items


def token_id(value: int | None, vocab_size: int, what: str) -> int | None:
  """A token id (or None) that indexes a vocabulary of `vocab_size` ids."""
  if value is not None and not 0 <= value < vocab_size:
    raise ValueError(f"{what}: token id {value} is outside the model's vocabulary "
                     f"(ids 0 to {vocab_size - 1})")
  return value


def _is_positive_number(value: Any) -> bool:
  return (not isinstance(value, bool) and isinstance(value, (int, float))
          and math.isfinite(value) and value > 0)


def positive_finite(value: Any, what: str) -> None:
  """A number > 0 (e.g. a norm epsilon or rotary theta: 0 or less gives NaN)."""
  if not _is_positive_number(value):
    raise ValueError(f"{what}: must be a finite number > 0, got {value!r}")


def printable(text: str) -> str:
  """`text` with control characters (terminal escape sequences, BEL, carriage returns, line
  breaks of other scripts) written as escapes, so that names from files cannot change the
  terminal. Newlines and tabs are kept."""
  if text.isprintable():
    return text
  return "".join(c if c in "\n\t" or c.isprintable() or unicodedata.category(c) == "Zs"
                 else repr(c)[1:-1] for c in text)


# ---------------------------------------------------------------------------- run.json

_RUN_STRINGS = ("run_key", "family", "task", "variant")
_RUN_COUNTS = ("n_examples", "n_rows", "n_records", "n_truncated", "n_demos_dropped")
_MODEL_NUMBERS = ("n_params", "train_tokens", "train_flops")


def _count(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def run_info(info: dict[str, Any], where: str, record_kinds: tuple[str, ...]) -> None:
  """Refuses a run.json whose fields (those present) have the wrong type: results
  directories may come from anyone, and their fields reach arithmetic and tables."""
  def fail(field: str, expected: str, value: Any) -> None:
    raise ValueError(f"{where}: {field}: must be {expected}, got {value!r}")

  for field in _RUN_STRINGS:
    if field in info and (not isinstance(info[field], str) or not info[field]):
      fail(field, "a non-empty string", info[field])
  for field in _RUN_COUNTS:
    if field in info and not _count(info[field]):
      fail(field, "an integer >= 0", info[field])
  kinds = info.get("record_kinds", [])
  if not isinstance(kinds, list) or any(k not in record_kinds for k in kinds):
    fail("record_kinds", f"a list of {', '.join(record_kinds)}", kinds)
  model = info.get("model", {"name": "-"})
  if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not model["name"]:
    fail("model", "an object with a name", model)
  for field in _MODEL_NUMBERS:
    if model.get(field) is not None and not _is_positive_number(model[field]):
      fail(f"model.{field}", "a finite positive number or null", model[field])


def markdown_text(text: str) -> str:
  """`text` shown as itself in Markdown: raw HTML escaped, no link or image (`[`, `]` and
  `\\` escaped), no table cell break (`|`) and on one line (a line break could end a
  table row or start a block)."""
  text = html.escape(text, quote=False)
  for c in "\\[]|":
    text = text.replace(c, "\\" + c)
  return " ".join(text.splitlines())


def parse_json(text: str, where: str) -> Any:
  """JSON text; invalid or too deeply nested JSON raises ValueError naming `where` (and
  the line)."""
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{where}:{e.lineno}: invalid JSON: {e.msg}") from None
  except RecursionError:
    raise ValueError(f"{where}: invalid JSON: nested too deeply") from None


def read_json_file(path: os.PathLike | str, max_bytes: int, kind: type = dict) -> Any:
  """A local JSON file of at most `max_bytes` holding a `kind` (object or list)."""
  size = os.stat(path).st_size
  if size > max_bytes:
    raise ValueError(f"{path}: {size} bytes; at most {max_bytes} are read from such a file")
  try:
    text = pathlib.Path(path).read_text(encoding="utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text at byte {e.start}") from None
  value = parse_json(text, os.fspath(path))
  if not isinstance(value, kind):
    raise ValueError(f"{path}: must hold a JSON {'object' if kind is dict else 'list'}, got "
                     f"{type(value).__name__}")
  return value
