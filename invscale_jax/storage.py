"""Where files live: a local path or a `gs://bucket/path` URL, read and written the same way.

Every file the project reads or writes (manifests, gin files, task data, vocabularies,
checkpoint metadata, results, reports) goes through this module, and checkpoint arrays
through tensorstore with `kvstore_spec`. The layer is tensorstore's key-value store:
- it is already what reads checkpoint arrays, so one set of credentials and settings
  (`GOOGLE_APPLICATION_CREDENTIALS`, the TPU VM's metadata server, `TENSORSTORE_GCS_HTTP_URL`
  for an emulator) serves every file;
- its writes are whole-object and atomic on both drivers (a reader sees the old file or
  the new one), and it has conditional writes on both (`create`: only if absent, with
  GCS's `ifGenerationMatch=0`; `replace`: only if unchanged), which the results store
  builds its create-once chunks and its lease on. There is no rename on GCS, and none is
  needed.
Local files are created with the process umask, as `open` would.

Cloud Storage as tensorstore 0.1.86 sees it: a missing object and an object in a missing
bucket both read as missing (GCS answers 404 to both), so read errors say "not found"
naming the URL; a write into a missing bucket fails and says so. A listing that GCS
refuses (403, or 404 for a missing bucket) comes back from tensorstore as an empty list,
so an empty listing of a URL is checked with a read, which does report a refusal.

Errors are one line naming the path or URL: `StorageError` (a ValueError),
`FileNotFoundError` for a missing file, or `IsADirectoryError` for a local directory read
as a file.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import functools
import glob
import hashlib
import os
import posixpath
import re
import struct
from typing import Iterator

import tensorstore as ts

from invscale_jax import console

GCS_PREFIX = "gs://"
_GCS_URL = re.compile(r"gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(?:/(.*))?")
# Retries of GCS requests: transient errors are retried 6 times with backoff (measured:
# about 13 s in all), then reported (tensorstore's default keeps retrying much longer).
# One context for every file and checkpoint array: its GCS retries, and a cache for the
# b-tree nodes of OCDBT databases (Orbax checkpoints), which every array read walks.
CONTEXT = ts.Context({"gcs_request_retries": {"max_retries": 6, "initial_delay": "0.2s",
                                              "max_delay": "16s"},
                      "cache_pool#ocdbt": {"total_bytes_limit": 100_000_000}})


class StorageError(ValueError):
  """A file or object that cannot be read or written; the message is one line."""

  def __init__(self, path: str, detail: str):
    super().__init__(" ".join(f"{path}: {detail}".split()))
    self.path = path
    self.detail = " ".join(detail.split())


def is_url(path: str | os.PathLike) -> bool:
  return os.fspath(path).startswith(GCS_PREFIX)


def join(base: str | os.PathLike, *parts: str) -> str:
  """`base/part/...`: posix joining for URLs, os.path for local paths."""
  base = os.fspath(base)
  return posixpath.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


def parent(path: str | os.PathLike) -> str:
  path = os.fspath(path).rstrip("/")
  return posixpath.dirname(path) if is_url(path) else os.path.dirname(os.path.abspath(path))


def basename(path: str | os.PathLike) -> str:
  return posixpath.basename(os.fspath(path).rstrip("/"))


def resolve(base: str | os.PathLike, path: str | os.PathLike) -> str:
  """`path` made absolute: a URL or absolute path as is (`~` expanded), else relative to
  the directory `base` (itself a path or URL)."""
  path = os.fspath(path)
  if is_url(path):
    return path.rstrip("/")
  path = os.path.expanduser(path)
  if os.path.isabs(path):
    return os.path.normpath(path)
  if is_url(base):
    return posixpath.normpath(posixpath.join(os.fspath(base), path)).replace("gs:/", "gs://", 1)
  return os.path.normpath(os.path.join(os.path.abspath(base), path))


def stays_inside(relative: str) -> bool:
  """Whether a relative path that a file names (a checkpoint's array, an index's weight
  file) stays inside that file's directory: neither absolute nor climbing out with `..`."""
  normal = posixpath.normpath(relative)
  return not (normal.startswith("/") or normal == ".." or normal.startswith("../"))


def absolute(path: str | os.PathLike) -> str:
  """A URL as is, a local path made absolute (`~` expanded)."""
  return resolve(os.getcwd(), path)


def _split_gcs(url: str) -> tuple[str, str]:
  match = _GCS_URL.fullmatch(url)
  if not match:
    raise StorageError(url, "not a valid gs://BUCKET/PATH URL")
  return match.group(1), match.group(2) or ""


def kvstore_spec(path: str | os.PathLike) -> dict:
  """The tensorstore kvstore spec of a path or URL (for checkpoint arrays)."""
  path = os.fspath(path)
  if is_url(path):
    bucket, key = _split_gcs(path)
    return {"driver": "gcs", "bucket": bucket, "path": key}
  return {"driver": "file", "path": os.path.abspath(path)}


@functools.lru_cache(maxsize=None)
def _store(root_spec: tuple[tuple[str, str], ...]) -> ts.KvStore:
  spec = dict(root_spec)
  if spec["driver"] == "gcs":
    _quiet_credentials_log(spec)
  return ts.KvStore.open(spec, context=CONTEXT).result()


_credentials_probed = False


def _quiet_credentials_log(spec: dict) -> None:
  """tensorstore's credential provider, made once per process on its first GCS request,
  logs which credentials it uses ("google_auth_provider.cc] Using ...") straight to
  descriptor 2. Unless the user asked for `--verbose`, that first request is made here,
  once, with descriptor 2 captured: a read of a key that need not exist, tried once (its
  errors are left to the real requests, which retry)."""
  global _credentials_probed
  if _credentials_probed or not console.is_quiet():
    return
  _credentials_probed = True
  probe = ts.KvStore.open(spec, context=ts.Context({"gcs_request_retries": {
      "max_retries": 0}})).result()
  with console.captured_stderr():
    try:
      probe.read(".invscale-credentials-probe").result()
    except ValueError:
      pass


def _locate(path: str) -> tuple[ts.KvStore, str]:
  """The store holding `path` (a bucket, or the local root) and the key within it."""
  if is_url(path):
    bucket, key = _split_gcs(path)
    return _store((("driver", "gcs"), ("bucket", bucket))), key
  return _store((("driver", "file"), ("path", "/"))), os.path.abspath(path).lstrip("/")


LOCK_SUFFIX = ".__lock"  # tensorstore's file driver writes `<file>` through `<file>.__lock`


def _try_lock(fd: int) -> bool:
  """Takes, without waiting, the lock tensorstore's file driver takes on a lock file: an
  open file description lock where the file system has them, else flock. False if another
  holds it, or if it cannot be told (then the file is left alone)."""
  if hasattr(fcntl, "F_OFD_SETLK"):
    try:
      fcntl.fcntl(fd, fcntl.F_OFD_SETLK,
                  struct.pack("@hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
      return True
    except OSError as error:
      if error.errno not in (errno.EINVAL, errno.ENOTSUP):
        return False
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except OSError:
    return False


def _drop_if_stale(lock_path: str) -> bool:
  """Removes a lock file that no write holds (taking its lock first, as tensorstore does
  when it deletes one, so a writer waiting on it retries on a fresh one)."""
  try:
    fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
  except OSError:  # none, its writer just finished, or not ours to touch (the write says)
    return False
  try:
    if _try_lock(fd) and os.path.samestat(os.fstat(fd), os.stat(lock_path)):
      os.remove(lock_path)
      return True
  except OSError:  # gone meanwhile, or not removable here (the write then says why)
    pass
  finally:
    os.close(fd)  # releases the lock
  return False


def _locate_for_write(path: str) -> tuple[ts.KvStore, str]:
  """`_locate`, after dropping a stale lock of a local `path`: tensorstore's file driver
  writes through `<path>.__lock` and reuses one left by a process killed mid-write without
  truncating it, so a shorter new file would keep the old one's trailing bytes."""
  if not is_url(path):
    _drop_if_stale(path + LOCK_SUFFIX)
  return _locate(path)


def _describe(error: Exception) -> str:
  """tensorstore's message without its status-code noise, e.g. 'permission denied'."""
  text = str(error).split(" [", 1)[0]
  code, _, rest = text.partition(": ")
  known = {"PERMISSION_DENIED": "permission denied", "NOT_FOUND": "not found",
           "UNAVAILABLE": "storage unavailable", "DEADLINE_EXCEEDED": "timed out",
           "UNAUTHENTICATED": "not authenticated (set up credentials)",
           "FAILED_PRECONDITION": "precondition failed", "ABORTED": "aborted"}
  if code in known:
    return f"{known[code]}: {rest}" if rest and code != "NOT_FOUND" else known[code]
  return text


@dataclasses.dataclass(frozen=True)
class Stamp:
  """What a read saw: the file's contents (None if it was missing) and its generation,
  to pass to `replace` (any later write changes the generation)."""

  data: bytes | None
  generation: bytes


def _run(path: str, what: str, future: ts.Future):
  try:
    return future.result()
  except ValueError as e:
    if str(e).startswith("NOT_FOUND") and is_url(path):  # what GCS says of a missing bucket
      raise FileNotFoundError(f"{path}: cannot {what}: bucket gs://{_split_gcs(path)[0]} "
                              f"does not exist") from None
    raise StorageError(path, f"cannot {what}: {_describe(e)}") from None


def read_stamped(path: str | os.PathLike) -> Stamp:
  """The contents of `path` (None when missing) and its generation."""
  path = absolute(path)
  store, key = _locate(path)
  if not is_url(path) and os.path.isdir(path):
    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
  result = _run(path, "read", store.read(key))
  return Stamp(result.value if result.state == "value" else None, result.stamp.generation)


def read_bytes(path: str | os.PathLike) -> bytes:
  data = read_stamped(path).data
  if data is None:
    path = absolute(path)
    why = " (no such object, or no such bucket)" if is_url(path) else ""
    raise FileNotFoundError(f"{path}: not found{why}")
  return data


def read_text(path: str | os.PathLike) -> str:
  data = read_bytes(path)
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise StorageError(absolute(path), f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def generation(path: str | os.PathLike) -> bytes:
  """The file's generation: it changes whenever the file is written (nothing is read)."""
  path = absolute(path)
  store, key = _locate(path)
  result = _run(path, "read", store.read(key, byte_range=slice(0, 0)))
  if result.state != "value":
    raise FileNotFoundError(f"{path}: not found")
  return result.stamp.generation


def is_file(path: str | os.PathLike) -> bool:
  path = absolute(path)
  if not is_url(path):
    return os.path.isfile(path)
  store, key = _locate(path)
  return _run(path, "read", store.read(key, byte_range=slice(0, 0))).state == "value"


def is_dir(path: str | os.PathLike) -> bool:
  """A local directory, or a URL under which at least one object exists."""
  path = absolute(path)
  if not is_url(path):
    return os.path.isdir(path)
  return next(iter(list_files(path)), None) is not None


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes the whole file at once: readers see the old contents or the new."""
  path = absolute(path)
  store, key = _locate_for_write(path)
  _run(path, "write", store.write(key, data))


def write_text(path: str | os.PathLike, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def create(path: str | os.PathLike, data: bytes) -> bool:
  """Writes `data` only if `path` does not exist yet; False (nothing written) if it did.
  Of several processes creating the same path at once, exactly one succeeds."""
  return replace(path, data, _missing_generation()) is not None


def replace(path: str | os.PathLike, data: bytes | None, generation: bytes) -> bytes | None:
  """Writes (or with `data=None` deletes) `path` only if its generation is still
  `generation` (from `read_stamped`); returns the new generation, None if it had changed."""
  path = absolute(path)
  store, key = _locate_for_write(path)
  stamp = _run(path, "write", store.write(key, data, if_equal=generation))
  return stamp.generation or None  # tensorstore's empty generation: the condition failed


@functools.cache
def _missing_generation() -> bytes:
  """The generation tensorstore gives a key that does not exist."""
  store = ts.KvStore.open({"driver": "memory"}).result()
  return store.read("absent").result().stamp.generation


def delete(path: str | os.PathLike) -> None:
  """Removes a file if it exists."""
  path = absolute(path)
  store, key = _locate(path)
  _run(path, "delete", store.write(key, None))


def list_files(directory: str | os.PathLike) -> Iterator[str]:
  """Paths relative to `directory` of every file under it (recursively), sorted."""
  directory = absolute(directory).rstrip("/")
  if is_url(directory):
    store, key = _locate(directory + "/")
    under = ts.KvStore.KeyRange(key, key[:-1] + "0") if key else ts.KvStore.KeyRange()
    keys = _run(directory, "list", store.list(under))
    if not keys:  # perhaps a refused listing (see the module docstring): a read says so
      _run(directory, "list", store.read(key or "_", byte_range=slice(0, 0)))
    return iter(sorted(k.decode("utf-8")[len(key):] for k in keys))
  if not os.path.isdir(directory):
    return iter(())
  store = _store((("driver", "file"), ("path", directory + "/")))
  names = (k.decode("utf-8") for k in _run(directory, "list", store.list()))
  # Leaves out tensorstore's lock files of writes in flight.
  return iter(sorted(n for n in names if not n.endswith(LOCK_SUFFIX)))


def drop_stale_locks(directory: str | os.PathLike) -> list[str]:
  """Removes the `<file>.__lock` files in a local directory that no write holds (left by
  processes killed mid-write), so a finished directory holds none; a lock in use is kept.
  Returns the names removed (none for a URL: GCS writes leave nothing)."""
  directory = absolute(directory)
  if is_url(directory):
    return []
  pattern = os.path.join(glob.escape(directory), "*" + LOCK_SUFFIX)
  return [os.path.basename(p) for p in sorted(glob.glob(pattern)) if _drop_if_stale(p)]


def children(directory: str | os.PathLike) -> list[str]:
  """Names of the files and directories directly in `directory`, sorted (none if absent)."""
  directory = absolute(directory)
  if not is_url(directory):
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []
  return sorted({name.split("/")[0] for name in list_files(directory)})


def local_copy(path: str | os.PathLike, cache_dir: str | None = None) -> str:
  """A local file with the contents of `path`, for libraries that only open local files
  (SentencePiece, tokenizers, gin's include): `path` itself when local, else a copy in
  the cache directory named by the contents' sha256 (small files only)."""
  path = absolute(path)
  if not is_url(path):
    return path
  data = read_bytes(path)
  cache_dir = cache_dir or os.path.join(user_cache_dir(), "files")
  target = os.path.join(cache_dir, hashlib.sha256(data).hexdigest(), basename(path))
  if not os.path.isfile(target):
    write_bytes(target, data)
  return target


def user_cache_dir() -> str:
  """invscale's cache directory: $INVSCALE_CACHE_DIR, else $XDG_CACHE_HOME/invscale_jax."""
  explicit = os.environ.get("INVSCALE_CACHE_DIR")
  if explicit:
    return os.path.expanduser(explicit)
  return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                      "invscale_jax")
