"""Content identities of files and directories, for run keys: computed once, then cached.

A local file's identity is the sha256 of its bytes, cached in the user cache directory
under its path and keyed by (size, mtime, ctime, inode, device): any write to the file
changes its ctime, so a changed file is always hashed again, while an unchanged one (a
re-run) costs one stat and one small read. A `gs://` object's identity is its
generation, which GCS changes whenever the object is written: nothing is downloaded.
A directory's identity (a checkpoint) combines its files' relative paths and identities,
so it follows every byte of every file, whatever the checkpoint's size; its files are
hashed (or their generations asked for) by several threads at once. Only regular files are
hashed (links are followed): a device or FIFO is refused, never read.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import stat

from invscale_jax import storage


def _cache_path(path: str) -> str:
  name = hashlib.sha256(path.encode()).hexdigest()[:32]
  return os.path.join(storage.user_cache_dir(), "hashes", name[:2], name + ".json")


def _sha256_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
  """sha256 of a file's contents (cached for local files, see the module docstring)."""
  path = storage.absolute(path)
  if storage.is_url(path):
    return hashlib.sha256(storage.read_bytes(path)).hexdigest()
  try:
    st = os.stat(path)
  except OSError as e:
    raise FileNotFoundError(f"{path}: {e.strerror}") from None
  if not stat.S_ISREG(st.st_mode):  # a device, FIFO or socket would be read forever
    raise ValueError(f"{path}: not a regular file (a device, FIFO or socket, or a "
                     f"link to one or to a directory); only regular files are hashed")
  key = [path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
  cache = _cache_path(path)
  try:
    with open(cache, encoding="utf-8") as f:
      entry = json.load(f)
    if entry.get("key") == key:
      return entry["sha256"]
  except (OSError, ValueError, AttributeError):
    pass  # no entry, or an unreadable one: hash again
  sha = _sha256_file(path)
  try:
    storage.write_text(cache, json.dumps({"key": key, "sha256": sha}))
  except (OSError, ValueError):
    pass  # a read-only cache only costs speed
  return sha


def file_identity(path: str) -> str:
  """What changes whenever the file's contents do: sha256 (local) or generation (gs://)."""
  if storage.is_url(path):
    return "gen:" + storage.generation(path).hex()
  return file_sha256(path)


def tree_identity(directory: str | os.PathLike) -> str:
  """sha256 over every file under `directory`: relative path and identity."""
  directory = storage.absolute(directory)
  names = list(storage.list_files(directory))
  if not names:
    raise FileNotFoundError(f"{directory}: no such directory, or it holds no files")
  # hashlib releases the GIL on large reads, and gs:// lookups wait on the network.
  with concurrent.futures.ThreadPoolExecutor(min(16, 2 * (os.cpu_count() or 1))) as pool:
    identities = pool.map(file_identity, [storage.join(directory, n) for n in names])
    digest = hashlib.sha256()
    for name, identity in zip(names, identities):
      digest.update(f"{name}\0{identity}\0".encode())
  return digest.hexdigest()
