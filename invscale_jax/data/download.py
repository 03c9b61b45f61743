"""Fetches the official release files and verifies each against its official sha256.

A file is streamed to a temporary name in the data directory, checked (size and sha256),
then renamed into place: an interrupted or corrupt download leaves nothing behind. For a
`gs://` data directory the temporary file is local and, once checked, is uploaded as one
object (an object appears whole or not at all). No more
than the official size is read (a mirror serving a larger file is stopped at once), and
each file has an overall time limit, connecting and headers included, so a mirror that
drips bytes (or headers) cannot hang the command.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import secrets
import socket
import tempfile
import threading
import urllib.request
from typing import Callable, Iterable

from invscale_jax import catalog, storage
from invscale_jax.data import datadir

URL_ENV_VAR = "INVSCALE_DATA_URL"
# A public mirror carrying the official file names (git-LFS copies of the release).
DEFAULT_BASE_URL = ("https://media.githubusercontent.com/media/raybears/cot-transparency/"
                    "main/data/inverse_scaling")
TIME_LIMIT = 600.0  # seconds per file, all reads together


class DownloadError(RuntimeError):
  """A file that could not be fetched or did not match its official hash."""


def base_url(flag: str | None = None) -> str:
  return (flag or os.environ.get(URL_ENV_VAR) or DEFAULT_BASE_URL).rstrip("/")


def fetch(spec: catalog.TaskSpec, data_dir: os.PathLike | str, url: str,
          timeout: float = 60.0, time_limit: float = TIME_LIMIT) -> str:
  """Downloads one task file to `data_dir`, verified, atomically. Each read may wait
  `timeout` seconds, and the whole download stops after `time_limit` seconds."""
  target = datadir.task_path(data_dir, spec)
  staging = tempfile.gettempdir() if storage.is_url(target) else os.path.dirname(target)
  tmp = pathlib.Path(staging, f".{spec.filename}.{secrets.token_hex(8)}.part")
  digest, size = hashlib.sha256(), 0
  watchdog = _Watchdog(time_limit)
  too_slow = lambda size: (f"{url}: download failed: not finished within the time limit of "
                           f"{time_limit:g} s ({size} of {spec.size} bytes)")
  try:
    # Created with mode 0666 less the umask, like any file the user writes.
    with watchdog, open(tmp, "xb") as out, watchdog.opener.open(
        url, timeout=min(timeout, time_limit)) as response:
      # read1 returns what has arrived (a plain read waits for the whole amount); one byte
      # past the official size is enough to know the file is not the official one.
      while block := response.read1(min(1 << 20, spec.size + 1 - size)):
        out.write(block)
        digest.update(block)
        size += len(block)
        if size > spec.size:
          raise DownloadError(f"{url}: not the official {spec.filename} (larger than its "
                              f"{spec.size} bytes); stopped reading")
    if watchdog.fired and size < spec.size:
      raise DownloadError(too_slow(size))
    if size != spec.size or digest.hexdigest() != spec.sha256:
      raise DownloadError(f"{url}: not the official {spec.filename} (got {size} bytes, sha256 "
                          f"{digest.hexdigest()[:12]}; official {spec.size} bytes, "
                          f"{spec.sha256[:12]})")
    if storage.is_url(target):
      storage.write_bytes(target, tmp.read_bytes())
    else:
      os.replace(tmp, target)
    return target
  # urllib's URLError and HTTPError are OSErrors; a cut chunked body raises IncompleteRead;
  # a refused gs:// write raises StorageError.
  except (OSError, http.client.HTTPException, storage.StorageError) as e:
    if watchdog.fired:
      raise DownloadError(too_slow(size)) from None
    raise DownloadError(f"{url}: download failed: {e}") from None
  finally:
    tmp.unlink(missing_ok=True)


class _Watchdog:
  """Shuts the download's connections down when its time is up: a server that drips its
  headers (or stalls in the TLS handshake) never trips a per-read timeout, and the body
  loop only checks the time between reads."""

  def __init__(self, seconds: float):
    self.fired = False
    self._sockets: list[socket.socket] = []
    self._timer = threading.Timer(seconds, self._fire)
    self._timer.daemon = True
    keep = self._sockets.append

    class HTTP(http.client.HTTPConnection):
      def connect(self):
        super().connect()
        keep(self.sock)

    class HTTPS(http.client.HTTPSConnection):
      def connect(self):
        super().connect()
        keep(self.sock)

    class HTTPHandler(urllib.request.HTTPHandler):
      def do_open(self, http_class, req, **kwargs):
        return super().do_open(HTTP, req, **kwargs)

    class HTTPSHandler(urllib.request.HTTPSHandler):
      def do_open(self, http_class, req, **kwargs):
        return super().do_open(HTTPS, req, **kwargs)

    self.opener = urllib.request.build_opener(HTTPHandler, HTTPSHandler)

  def _fire(self) -> None:
    self.fired = True
    for sock in self._sockets:
      try:
        sock.shutdown(socket.SHUT_RDWR)
      except OSError:
        pass  # already closed

  def __enter__(self) -> "_Watchdog":
    self._timer.start()
    return self

  def __exit__(self, *exc) -> None:
    self._timer.cancel()


def download(data_dir: os.PathLike | str, url: str, tasks: Iterable[catalog.TaskSpec],
             log: Callable[[str], None] = print,
             time_limit: float = TIME_LIMIT) -> list[str]:
  """Fetches every task not already verified in `data_dir` (each within `time_limit`
  seconds); returns the error lines."""
  if not storage.is_url(data_dir):
    root = pathlib.Path(data_dir)
    if root.exists() and not root.is_dir():
      raise NotADirectoryError(f"{root}: the data directory is a file, not a directory")
    root.mkdir(parents=True, exist_ok=True)
  errors = []
  for spec in tasks:
    path = datadir.task_path(data_dir, spec)
    if storage.is_file(path) and datadir.sha256_of(path) == spec.sha256:
      log(f"{spec.name}: already verified")
      continue
    try:
      fetch(spec, data_dir, f"{url}/{spec.filename}", time_limit=time_limit)
      log(f"{spec.name}: downloaded and verified ({spec.size} bytes)")
    except DownloadError as e:
      errors.append(str(e))
  return errors
