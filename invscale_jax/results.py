"""The results directory, local or on GCS: what `score` writes and `report` reads.

  RESULTS/runs/<run_key>/run.json            what was run (model, task, variant, options,
                                             n_examples, n_records, record_kinds)
  RESULTS/runs/<run_key>/chunk-000000.jsonl  records of whole examples; each chunk is
                                             written once, whole, and never overwritten
  RESULTS/runs/<run_key>/LEASE               held by the one process writing the run
  RESULTS/runs/<run_key>/COMPLETE            written last: every chunk's name and sha256
  RESULTS/runs/<run_key>/rejected/           chunks found bad on resume, kept for a look

A run is complete only when COMPLETE lists exactly the chunk files present, with their
contents unchanged, and those chunks hold every example of run.json once with all its
records (`verify_complete`); anything else is resumed. Resuming (`open_run`) checks every
chunk: a truncated, unreadable or foreign chunk, or one repeating examples of another, is
moved to rejected/ with a warning and its examples are scored again. Files whose names are
not chunk names are ignored with a warning.

One writer per run: `open_run` takes the run's LEASE, a small JSON object created only if
absent (so two processes cannot both take it) and renewed while the run is scored. A
second process is told who holds it; a lease is taken over only when it has expired or
its holder, on this host, is gone (e.g. after `kill -9`).
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from typing import Any, Sequence

from invscale_jax import records, storage
from invscale_jax.console import warn

RUNS = "runs"
RUN_INFO = "run.json"
COMPLETE = "COMPLETE"
LEASE = "LEASE"
REJECTED = "rejected"
_CHUNK = re.compile(r"chunk-(\d{6})\.jsonl")
NO_MARKER = "no COMPLETE marker"  # what `verify_complete` says of a run not yet finished


class RunBusy(ValueError):
  """Another process holds the run's lease; the message says who."""


class LeaseLost(ValueError):
  """This process's lease was taken over; it must stop writing."""


def run_dir(results: str, key: str) -> str:
  return storage.join(results, RUNS, key)


def run_dirs(results: str | os.PathLike) -> list[str]:
  """Run directories (those holding run.json) under RESULTS/runs, sorted."""
  root = storage.join(storage.absolute(results), RUNS)
  names = {n.split("/")[0] for n in storage.list_files(root)
           if n.count("/") == 1 and n.endswith("/" + RUN_INFO)}
  return [storage.join(root, n) for n in sorted(names)]


def read_run_info(directory: str) -> dict[str, Any]:
  path = storage.join(directory, RUN_INFO)
  try:
    info = json.loads(storage.read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
  if not isinstance(info, dict):
    raise ValueError(f"{path}: not a JSON object")
  return info


def write_run_info(directory: str, info: dict[str, Any]) -> None:
  storage.write_text(storage.join(directory, RUN_INFO), json.dumps(info, indent=1, sort_keys=True))


def chunk_name(number: int) -> str:
  return f"chunk-{number:06d}.jsonl"


def chunk_names(directory: str, quiet: bool = False) -> list[str]:
  """Names of the chunk files of a run, in order; other top-level files are ignored (with a
  warning unless `quiet`)."""
  names = []
  for name in storage.list_files(directory):
    if _CHUNK.fullmatch(name):
      names.append(name)
    elif "/" not in name and name not in (RUN_INFO, COMPLETE, LEASE) and not quiet:
      warn(f"{storage.join(directory, name)}: ignored (not a chunk name: chunk-NNNNNN.jsonl)")
  return names


def read_records(directory: str) -> list[records.Record]:
  """Every record of a run's chunks, in chunk order; a bad line raises naming FILE:LINE."""
  return [r for name in chunk_names(directory, quiet=True)
          for r in records.parse_chunk(storage.join(directory, name),
                                       storage.read_bytes(storage.join(directory, name)))]


# ---------------------------------------------------------------------------- completeness


def _expected(info: dict[str, Any]) -> tuple[int, int, tuple[str, ...]]:
  return int(info["n_examples"]), int(info["n_records"]), tuple(info["record_kinds"])


def _chunk_problem(directory: str, name: str, data: bytes, info: dict[str, Any],
                   seen: set[int]) -> tuple[str | None, set[int]]:
  """Why a chunk cannot be kept (None if it can), and the examples it holds."""
  path = storage.join(directory, name)
  try:
    recs = records.parse_chunk(path, data)
  except ValueError as e:
    return str(e), set()
  n_examples, _, kinds = _expected(info)
  by_example: dict[int, list[records.Record]] = {}
  for r in recs:
    if (r.run_key, r.model, r.task, r.variant) != (info["run_key"], info["model"]["name"],
                                                   info["task"], info["variant"]):
      return f"holds a record of another run ({r.run_key} {r.model} {r.task}.{r.variant})", set()
    if not 0 <= r.example_id < n_examples:
      return f"example {r.example_id} is not one of the run's {n_examples}", set()
    by_example.setdefault(r.example_id, []).append(r)
  if not by_example:
    return "holds no records", set()
  for example, example_recs in sorted(by_example.items()):
    problem = records.example_problem(example_recs, kinds)
    if problem:
      return f"example {example}: {problem}", set()
  repeated = sorted(set(by_example) & seen)
  if repeated:
    return f"repeats examples {repeated[:5]} of an earlier chunk", set()
  return None, set(by_example)


def verify_complete(directory: str, info: dict[str, Any] | None = None) -> str | None:
  """None if the run is complete (see the module docstring), else what is wrong."""
  marker = storage.read_stamped(storage.join(directory, COMPLETE)).data
  if marker is None:
    return NO_MARKER
  try:
    listed = json.loads(marker)["chunks"]
    info = info or read_run_info(directory)
    n_examples, n_records, kinds = _expected(info)
  except (ValueError, KeyError, TypeError):
    return "COMPLETE or run.json is not what this version writes"
  present = chunk_names(directory, quiet=True)
  if sorted(listed) != present:
    return (f"COMPLETE lists chunks {sorted(listed)} but the run holds {present}")
  seen: set[int] = set()
  total = 0
  for name in present:
    data = storage.read_bytes(storage.join(directory, name))
    if hashlib.sha256(data).hexdigest() != listed[name]:
      return f"{name} changed after the run was completed"
    problem, examples = _chunk_problem(directory, name, data, info, seen)
    if problem:
      return f"{name}: {problem}"
    seen |= examples
    total += data.count(b"\n")
  if seen != set(range(n_examples)) or total != n_records:
    return f"holds {len(seen)} of {n_examples} examples and {total} of {n_records} records"
  return None


def is_complete(directory: str) -> bool:
  return verify_complete(directory) is None


def completion_stats(directory: str) -> dict[str, Any]:
  """What `RunWriter.finish` kept in COMPLETE besides the chunks ({} if nothing)."""
  data = storage.read_stamped(storage.join(directory, COMPLETE)).data
  try:
    marker = json.loads(data) if data else {}
  except ValueError:
    return {}
  return {k: v for k, v in marker.items() if k != "chunks"} if isinstance(marker, dict) else {}


# ---------------------------------------------------------------------------- the lease


def _lease_seconds() -> float:
  return float(os.environ.get("INVSCALE_LEASE_SECONDS", "300"))


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class Lease:
  """The right to write one run, held by this process until released or expired."""

  def __init__(self, directory: str, label: str):
    self.path = storage.join(directory, LEASE)
    self.label = label
    self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "id": uuid.uuid4().hex,
                   "since": _now()}
    self._generation: bytes | None = None
    self.lost = False

  def _body(self) -> bytes:
    return json.dumps(dict(self.holder, expires=time.time() + _lease_seconds())).encode()

  def _takeable(self, current: dict[str, Any]) -> bool:
    if float(current.get("expires", 0)) < time.time():
      return True
    same_host = current.get("host") == self.holder["host"]
    return same_host and not _pid_alive(int(current.get("pid", -1)))

  def acquire(self) -> None:
    """Takes the lease, or raises RunBusy naming its holder."""
    for _ in range(10):
      stamp = storage.read_stamped(self.path)
      if stamp.data is None:
        if storage.create(self.path, self._body()):
          self._generation = storage.read_stamped(self.path).generation
          return
        continue
      try:
        current = json.loads(stamp.data)
      except ValueError:
        current = {}
      if not self._takeable(current):
        expires = datetime.datetime.fromtimestamp(float(current.get("expires", 0)))
        raise RunBusy(
            f"{self.label}: being scored by pid {current.get('pid')} on "
            f"{current.get('host')} since {current.get('since')} (its lease, {self.path}, "
            f"is renewed while it works and expires at {expires:%H:%M:%S} if it stops); "
            f"wait for it, or re-run once it has ended")
      self._generation = storage.replace(self.path, self._body(), stamp.generation)
      if self._generation is not None:
        warn(f"{self.label}: took over the lease of pid {current.get('pid')} on "
             f"{current.get('host')}, which is gone or expired")
        return
    raise RunBusy(f"{self.label}: could not take {self.path} (other processes kept changing it)")

  def renew(self) -> None:
    if self.lost or self._generation is None:
      return
    self._generation = storage.replace(self.path, self._body(), self._generation)
    if self._generation is None:
      self.lost = True

  def check(self) -> None:
    """Raises LeaseLost if another process took the lease over."""
    if self.lost:
      raise LeaseLost(f"{self.label}: another process took over {self.path}; stopped "
                      f"without writing more (its records are kept)")

  def release(self) -> None:
    if self._generation is not None and not self.lost:
      storage.replace(self.path, None, self._generation)
    self._generation = None


class LeaseKeeper:
  """Renews leases in a background thread while the main thread scores."""

  def __init__(self):
    self.leases: list[Lease] = []
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, daemon=True, name="invscale-lease")

  def _loop(self) -> None:
    while not self._stop.wait(_lease_seconds() / 5):
      for lease in list(self.leases):
        try:
          lease.renew()
        except (ValueError, OSError) as e:  # storage briefly unreachable: try again later
          warn(f"{lease.label}: could not renew its lease: {e}")

  def __enter__(self) -> "LeaseKeeper":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()
    for lease in self.leases:
      try:
        lease.release()
      except (ValueError, OSError) as e:
        warn(f"{lease.label}: could not release its lease: {e}")


# ---------------------------------------------------------------------------- writing a run


@dataclasses.dataclass
class RunWriter:
  """One run being written by the process holding its lease."""

  directory: str
  info: dict[str, Any]
  lease: Lease
  done: set[int]  # examples whose records are in kept chunks
  next_chunk: int

  def write_chunk(self, recs: Sequence[records.Record]) -> None:
    """Writes the records of whole examples as the next chunk, once."""
    self.lease.check()
    records.check_finite(recs, self.lease.label)
    path = storage.join(self.directory, chunk_name(self.next_chunk))
    if not storage.create(path, records.format_chunk(recs)):
      raise LeaseLost(f"{path}: already exists: another process is writing this run")
    self.next_chunk += 1
    self.done |= {r.example_id for r in recs}

  def finish(self, stats: dict[str, Any] | None = None) -> None:
    """Writes COMPLETE once every example is in a chunk, verified as a reader would;
    `stats` (e.g. tokens and seconds of this session's work) are kept in it."""
    self.lease.check()
    names = chunk_names(self.directory, quiet=True)
    digests = {n: hashlib.sha256(storage.read_bytes(storage.join(self.directory, n))).hexdigest()
               for n in names}
    marker = {"chunks": digests, "completed": _now(), **(stats or {})}
    storage.write_text(storage.join(self.directory, COMPLETE), json.dumps(marker, indent=1))
    problem = verify_complete(self.directory, self.info)
    if problem:
      storage.delete(storage.join(self.directory, COMPLETE))
      raise ValueError(f"{self.lease.label}: not complete after scoring: {problem}")
    self.lease.release()  # at once: a complete run is never re-opened to drop a stale lease


def _reject(directory: str, name: str, reason: str) -> None:
  source = storage.join(directory, name)
  target = storage.join(directory, REJECTED, f"{int(time.time())}-{name}")
  storage.write_bytes(target, storage.read_bytes(source))
  storage.delete(source)
  warn(f"{source}: {reason}; moved to {target} and its examples will be scored again")


@dataclasses.dataclass
class Scan:
  """What a run's chunks hold: the examples and records of good chunks, and the bad ones."""

  done: set[int]
  records: list[records.Record]
  bad: list[tuple[str, str]]  # (chunk name, what is wrong)
  next_chunk: int  # the number of the next chunk to write


def scan(directory: str, info: dict[str, Any], quiet: bool = False) -> Scan:
  """Checks every chunk of a run (reads, never writes)."""
  found = Scan(set(), [], [], 0)
  for name in chunk_names(directory, quiet):
    path = storage.join(directory, name)
    data = storage.read_bytes(path)
    problem, examples = _chunk_problem(directory, name, data, info, found.done)
    if problem:
      found.bad.append((name, problem))
    else:
      found.done |= examples
      found.records += records.parse_chunk(path, data)
    found.next_chunk = max(found.next_chunk, int(_CHUNK.fullmatch(name).group(1)) + 1)
  return found


def open_run(directory: str, info: dict[str, Any], label: str, keeper: LeaseKeeper) -> RunWriter:
  """Takes the run's lease, writes run.json, and keeps the good chunks already there (bad
  ones are moved aside); returns the writer of the rest."""
  lease = Lease(directory, label)
  lease.acquire()
  keeper.leases.append(lease)
  # A local write cut by kill -9 leaves tensorstore's `<file>.__lock`, holding what was
  # being written; its next write of that file reuses it without truncating it (old bytes
  # would trail the new chunk). The lease holder is this run's only writer: drop them.
  if not storage.is_url(directory):  # (tensorstore's listing does not show them)
    for stale in glob.glob(os.path.join(glob.escape(directory), "*.__lock")):
      os.remove(stale)
  storage.delete(storage.join(directory, COMPLETE))  # re-verified when the run finishes
  write_run_info(directory, info)
  found = scan(directory, info)
  for name, problem in found.bad:
    _reject(directory, name, problem)
  return RunWriter(directory, info, lease, found.done, found.next_chunk)
