"""tensorstore's file driver writes `<file>` through `<file>.__lock`; a process killed
mid-write leaves that lock file behind, holding what it was writing. The storage layer
never lets one spoil a later write, and drops the stale ones a finished run would keep."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from invscale_jax import storage

CUT = b"a much longer write that was cut by kill -9 " * 50


@pytest.mark.parametrize("write", [
    lambda path: storage.write_bytes(path, b"new"),
    lambda path: storage.create(path, b"new"),
    lambda path: storage.replace(path, b"new", storage.read_stamped(path).generation)],
    ids=["write_bytes", "create", "replace"])
def test_a_stale_lock_file_never_trails_a_new_write(write, tmp_path: pathlib.Path) -> None:
  """(tensorstore alone would reuse the lock file without truncating it: "newa much...")"""
  path = tmp_path / "LEASE"
  (tmp_path / "LEASE.__lock").write_bytes(CUT)
  write(path)
  assert path.read_bytes() == b"new"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["LEASE"]


HOLD_LOCK = """
import fcntl, sys
with open(sys.argv[1], "r+b") as f:
  fcntl.lockf(f, fcntl.LOCK_EX)  # a record lock, which tensorstore's writes wait on
  print("held", flush=True)
  sys.stdin.read()
"""


def test_a_lock_file_in_use_is_kept_and_a_stale_one_dropped(tmp_path: pathlib.Path) -> None:
  """A lock another process holds is a write in flight: it stays; once that process is
  gone the lock file is stale and goes."""
  held, stale = tmp_path / "LEASE.__lock", tmp_path / "chunk-000000.jsonl.__lock"
  held.write_bytes(b"")
  stale.write_bytes(CUT)
  holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(held)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
  try:
    assert holder.stdout.readline() == b"held\n"
    assert storage.drop_stale_locks(tmp_path) == [stale.name]
    assert held.exists() and not stale.exists()
  finally:
    holder.communicate(b"")
  assert storage.drop_stale_locks(tmp_path) == [held.name]
  assert list(tmp_path.iterdir()) == []
