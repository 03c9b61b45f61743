"""`invscale report ... --open`: the written report in a browser. A report in a bucket is
first copied (`transfer.copy`, as `invscale storage cp` does) to a directory in invscale's
cache named by its URL, so opening it again refreshes the same copy."""

from __future__ import annotations

import hashlib
import os
import pathlib
import webbrowser

from invscale_jax import storage
from invscale_jax import transfer

PAGE = "report.html"


def local_dir(out: str | os.PathLike) -> pathlib.Path:
  """A local directory holding the report at `out`: `out` itself, or for a gs:// URL a
  copy under the cache's `reports/` (overwritten each time)."""
  out = storage.absolute(out)
  if not storage.is_url(out):
    return pathlib.Path(out)
  name = hashlib.sha256(out.encode()).hexdigest()[:16]
  target = os.path.join(storage.user_cache_dir(), "reports", name)
  transfer.copy(out, target)
  return pathlib.Path(target)


def open_report(out: str | os.PathLike) -> str:
  """Opens the report at `out` in the user's browser; returns the line to print (with the
  local path to open by hand when no browser can be started)."""
  page = local_dir(out) / PAGE
  if webbrowser.open(page.as_uri()):
    return f"opened {page} in a browser"
  return f"no browser found; open {page}"
