"""Writes the report directory DIR all at once: every file goes to a temporary directory
beside DIR, which then replaces DIR.

Replacing a directory takes two renames (DIR to `.DIR.old`, the new one to DIR). A kill
between them leaves the earlier report in `.DIR.old`; the next write into DIR first puts it
back (or removes it, when DIR is there) and removes the temporary directories killed
writers left. Writers hold a lock on DIR's parent while they do this, so none ever removes
another's files. Every report directory (and every temporary one, before anything else is
written in it) holds the file MARKER: a `.DIR.old` or temporary directory without it is not
ours and is never removed (a `.DIR.old` that is not ours stops the write).

A `gs://` DIR cannot be swapped (Cloud Storage has no rename; each object is replaced
whole, one at a time), so there a report is complete only while DIR/COMPLETE lists every
file of it with its sha256 and the files match (`gcs_problem`). A write deletes COMPLETE
first, so the earlier report stops being complete before any of its files changes, then
writes every file, then creates COMPLETE (only if absent: of two writers racing, one
fails) and checks it against the files, deleting it again if another writer changed
them meanwhile. A kill anywhere leaves a DIR without a valid COMPLETE, which the next
write replaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import re
import secrets
import shutil
from typing import Iterator, Sequence

from invscale_jax import storage
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
COMPLETE = "COMPLETE"  # a gs:// report's list of files and their sha256
MARKER = ".invscale-report"  # in every local report directory: this program wrote it
MARKER_TEXT = b"written by invscale report; the directory is replaced whole by the next one\n"


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
  return not names or (names <= {*FILES, MARKER} and "metrics.json" in names)


def _ours(directory: pathlib.Path) -> bool:
  """Whether `directory` was made by a report writer (it holds MARKER, and only report
  files); a symlink never is."""
  if directory.is_symlink() or not directory.is_dir():
    return False
  names = {p.name for p in directory.iterdir()}
  return MARKER in names and names <= {*FILES, MARKER}


def check_destination(out_dir: str | pathlib.Path) -> str | pathlib.Path:
  """`out_dir`, if it is absent, empty or an earlier report; else ReportError."""
  if storage.is_url(out_dir):
    names = set(storage.children(out_dir))
    if not names <= {*FILES, COMPLETE}:
      raise ReportError(f"{out_dir}: holds files that are not a report's; not overwriting it")
    return storage.absolute(out_dir)
  out = pathlib.Path(out_dir)
  if out.exists() and not (out.is_dir() and _replaceable(out)):
    raise ReportError(f"{out}: exists and is not a report directory; not overwriting it")
  _check_old(out)
  return out


def _check_old(out: pathlib.Path) -> None:
  """A `.DIR.old` beside DIR must be one a report writer left (it is removed or restored)."""
  old = _old(out)
  if os.path.lexists(old) and not _ours(old):
    raise ReportError(f"{old}: exists and is not a report this program wrote (no {MARKER}); "
                      f"move it away to write {out.name}")


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
  missing and is removed otherwise; temporary `.DIR.<hex>.tmp` directories are removed.
  Only directories a writer made (MARKER, or an empty temporary one) are touched."""
  _check_old(out)
  if _ours(_old(out)):
    if out.exists():
      shutil.rmtree(_old(out))
    else:
      _old(out).rename(out)
  pattern = re.compile(rf"\.{re.escape(out.name)}\.[0-9a-f]{{16}}\.tmp")
  for p in out.parent.iterdir():
    if pattern.fullmatch(p.name) and not p.is_symlink() and p.is_dir():
      if _ours(p):
        shutil.rmtree(p)
      elif not any(p.iterdir()):  # killed before it wrote MARKER
        p.rmdir()


def _swap(files: dict[str, bytes], out: pathlib.Path) -> None:
  tmp = out.with_name(f".{out.name}.{secrets.token_hex(8)}.tmp")
  tmp.mkdir()  # mode 0777 less the umask, like the files written in it
  try:
    for name, data in {MARKER: MARKER_TEXT, **files}.items():  # MARKER first
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


def write(files: dict[str, bytes], out_dir: str | pathlib.Path) -> str | pathlib.Path:
  """Puts `files` in `out_dir` all at once; an earlier report there is replaced. A failure
  of the file system (full, read-only) raises an OSError naming `out_dir`."""
  out = check_destination(out_dir)
  if storage.is_url(out):
    return _write_gcs(files, out)
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


# ---------------------------------------------------------------------------- on GCS


def _digests(files: dict[str, bytes]) -> dict[str, str]:
  return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def gcs_problem(out: str) -> str | None:
  """None if the report at the gs:// URL `out` is complete, else what is wrong."""
  marker = storage.read_stamped(storage.join(out, COMPLETE)).data
  if marker is None:
    return "no COMPLETE marker"
  try:
    listed = json.loads(marker)["files"]
  except (ValueError, KeyError, TypeError):
    return "COMPLETE is not what this version writes"
  present = {n: storage.read_bytes(storage.join(out, n)) for n in storage.children(out)
             if n != COMPLETE}
  return None if _digests(present) == listed else "its files differ from what COMPLETE lists"


def _write_gcs(files: dict[str, bytes], out: str) -> str:
  marker = storage.join(out, COMPLETE)
  storage.delete(marker)
  for name, data in files.items():
    storage.write_bytes(storage.join(out, name), data)
  if not storage.create(marker, json.dumps({"files": _digests(files)}, indent=1).encode()):
    raise ReportError(f"{out}: another report was written here at the same time; run again")
  problem = gcs_problem(out)
  if problem:
    storage.delete(marker)
    raise ReportError(f"{out}: another report was written here at the same time ({problem}); "
                      "run again")
  return out
