"""`invscale storage cp SRC DST`: copy a file or a folder between local disk and gs://.

Through `storage` (tensorstore), so with the same credentials, retries and endpoint
(`TENSORSTORE_GCS_HTTP_URL`, e.g. a local emulator) as scoring: put a family and the task
data into a bucket, or bring a report out of one to open it.
"""

from __future__ import annotations

import argparse
import os

from invscale_jax import storage


def copy(src: str, dst: str) -> tuple[int, int]:
  """Copies the file `src` to `dst`, or every file under the directory `src` to the same
  relative paths under `dst` (overwriting). Returns (files, bytes) copied."""
  if storage.is_file(src):
    data = storage.read_bytes(src)
    storage.write_bytes(dst, data)
    return 1, len(data)
  names = list(storage.list_files(src)) if storage.is_dir(src) else []
  if not names:
    raise FileNotFoundError(f"{src}: no such file or directory (or an empty one)")
  total = 0
  for name in names:
    data = storage.read_bytes(storage.join(src, name))
    storage.write_bytes(storage.join(dst, name), data)
    total += len(data)
  return len(names), total


def _cp(args: argparse.Namespace) -> int:
  src, dst = storage.absolute(args.src), storage.absolute(args.dst)
  if not storage.is_url(dst) and os.path.isfile(dst) and not storage.is_file(src):
    raise FileExistsError(f"{dst}: is a file; a directory's files cannot go there")
  files, size = copy(src, dst)
  print(f"copied {files} file{'s' * (files != 1)} ({size / 1e6:.1f} MB) to {dst}")
  return 0


def register(subparsers: argparse._SubParsersAction) -> None:
  p = subparsers.add_parser("storage", help="copy files and folders to and from gs:// buckets")
  sub = p.add_subparsers(dest="storage_command", required=True)
  p = sub.add_parser("cp", help="copy a file, or a folder recursively, between local paths "
                                "and gs:// URLs (e.g. a family into a bucket, a report out "
                                "of one)")
  p.add_argument("src", metavar="SRC", help="a file or folder: local path or gs:// URL")
  p.add_argument("dst", metavar="DST", help="where it goes: a folder's files keep their "
                                            "paths relative to SRC under DST (overwritten)")
  p.set_defaults(func=_cp)
