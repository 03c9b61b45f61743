"""Writes the report directory DIR all at once: every file goes to a temporary directory
beside DIR, which then replaces DIR.

Replacing a directory takes two renames (DIR to `.DIR.old`, the new one to DIR). A kill
between them leaves the earlier report in `.DIR.old`; the next write into DIR first puts it
back (or removes it, when DIR is there) and removes the temporary directories killed
writers left. Writers hold a lock on DIR's parent while they do this, so none ever removes
another's files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import re
import secrets
import shutil
from typing import Iterator, Sequence

from invscale_jax.report import export
from invscale_jax.report import html
from invscale_jax.report import markdown
from invscale_jax.report import plots
from invscale_jax.report import tables
from invscale_jax.report.analysis import Analysis
from invscale_jax.report.errors import ReportError

TITLE = "Inverse scaling report"
FILES = ("metrics.csv", "metrics.json", "curves.png", "curves.svg", "report.html",
         "summary.md")


def render(a: Analysis, inputs: Sequence[str]) -> dict[str, bytes]:
  """Every file of the report, by name."""
  fig = plots.figure(a, a.options.metric)
  png, svg = plots.render(fig, "png"), plots.render(fig, "svg")
  header = tables.header_lines(a, inputs)
  sections = tables.sections(a)
  return {
      "metrics.csv": export.metrics_csv(a).encode(),
      "metrics.json": export.metrics_json(a, inputs).encode(),
      "curves.png": png,
      "curves.svg": svg,
      "report.html": html.render(TITLE, header, sections, png).encode(),
      "summary.md": markdown.render(TITLE, header, sections, "curves.png").encode(),
  }


def _replaceable(out: pathlib.Path) -> bool:
  """An existing DIR may be replaced only if it is empty or an earlier report."""
  names = {p.name for p in out.iterdir()}
  return not names or (names <= set(FILES) and "metrics.json" in names)


def check_destination(out_dir: str | pathlib.Path) -> pathlib.Path:
  """`out_dir`, if it is absent, empty or an earlier report; else ReportError."""
  out = pathlib.Path(out_dir)
  if out.exists() and not (out.is_dir() and _replaceable(out)):
    raise ReportError(f"{out}: exists and is not a report directory; not overwriting it")
  return out


@contextlib.contextmanager
def _locked(directory: pathlib.Path) -> Iterator[None]:
  """An exclusive lock on `directory`, held by this process until the block ends."""
  fd = os.open(directory, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # releases the lock


def _old(out: pathlib.Path) -> pathlib.Path:
  return out.with_name(f".{out.name}.old")


def _recover(out: pathlib.Path) -> None:
  """Undoes or finishes what a killed writer left: `.DIR.old` goes back to DIR when DIR is
  missing and is removed otherwise; temporary `.DIR.<hex>.tmp` directories are removed."""
  if _old(out).is_dir():
    if out.exists():
      shutil.rmtree(_old(out))
    else:
      _old(out).rename(out)
  pattern = re.compile(rf"\.{re.escape(out.name)}\.[0-9a-f]{{16}}\.tmp")
  for p in out.parent.iterdir():
    if pattern.fullmatch(p.name) and p.is_dir():
      shutil.rmtree(p)


def _swap(files: dict[str, bytes], out: pathlib.Path) -> None:
  tmp = out.with_name(f".{out.name}.{secrets.token_hex(8)}.tmp")
  tmp.mkdir()  # mode 0777 less the umask, like the files written in it
  try:
    for name, data in files.items():
      (tmp / name).write_bytes(data)
    if out.exists():
      out.rename(_old(out))
      try:
        tmp.rename(out)
      except BaseException:
        _old(out).rename(out)
        raise
      shutil.rmtree(_old(out))
    else:
      tmp.rename(out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def write(files: dict[str, bytes], out_dir: str | pathlib.Path) -> pathlib.Path:
  """Puts `files` in `out_dir` all at once; an earlier report there is replaced. A failure
  of the file system (full, read-only) raises an OSError naming `out_dir`."""
  out = check_destination(out_dir)
  try:
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.parent):
      _recover(out)
      _swap(files, out)
  except OSError as e:
    if e.errno is None:
      raise
    raise OSError(e.errno, e.strerror, str(out)) from None
  return out
