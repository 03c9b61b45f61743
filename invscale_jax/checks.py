"""Checks of values that come from users (flags, manifests, config files), in one place.

Each turns a bad value into a one-line `ValueError` naming the flag or field, before
anything large is built or read: numbers written in ASCII digits within a stated range,
token ids inside a vocabulary, and text made safe for a terminal.
"""

from __future__ import annotations

import argparse
import math
import re
import unicodedata
from typing import Any, Callable

# ASCII digits only: int() and float() also take other scripts' digits, "1_000" and spaces.
_INT = re.compile(r"[+-]?[0-9]{1,18}", re.ASCII)
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?", re.ASCII)


def _range(minimum: float | None, maximum: float | None) -> str:
  if minimum is not None and maximum is not None:
    return f"from {minimum:g} to {maximum:g}"
  return f">= {minimum:g}" if minimum is not None else f"<= {maximum:g}"


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


def positive_finite(value: Any, what: str) -> None:
  """A number > 0 (e.g. a norm epsilon or rotary theta: 0 or less gives NaN)."""
  if (isinstance(value, bool) or not isinstance(value, (int, float))
      or not math.isfinite(value) or value <= 0):
    raise ValueError(f"{what}: must be a finite number > 0, got {value!r}")


def printable(text: str) -> str:
  """`text` with control characters (terminal escape sequences, BEL, carriage returns, line
  breaks of other scripts) written as escapes, so that names from files cannot change the
  terminal. Newlines and tabs are kept."""
  if text.isprintable():
    return text
  return "".join(c if c in "\n\t" or c.isprintable() or unicodedata.category(c) == "Zs"
                 else repr(c)[1:-1] for c in text)
