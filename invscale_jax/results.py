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
records, every score a finite log-probability (`verify_complete`); a caller that planned
the run also checks that run.json holds the plan's key parts (a run directory copied under
another key is not that run). Anything else is resumed. Resuming (`open_run`) checks every
chunk: a truncated, unreadable or foreign chunk, one repeating examples of another, and
one changed or added after COMPLETE was written, is moved to rejected/ with a warning and
its examples are scored again. Files whose names are not chunk names are ignored with a
warning.

One writer per run: `claim` takes the run's LEASE, a small JSON object created only if
absent (so two processes cannot both take it) and renewed while the run is scored. A
second process is told who holds it; a lease is taken over only when it has expired, its
holder on this host (and in this PID namespace) is gone (e.g. after `kill -9`), or it is
not a lease this version writes (a warning says so). Before every chunk and before
COMPLETE the writer reads the stored lease: a writer whose lease was taken over stops.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import socket
import threading
import time
import uuid
from typing import Any, Sequence

from invscale_jax import checks, records, storage
from invscale_jax.console import warn

RUNS = "runs"
RUN_INFO = "run.json"
COMPLETE = "COMPLETE"
LEASE = "LEASE"
REJECTED = "rejected"
# Six digits, more only past 999999 (one name per number).
_CHUNK = re.compile(r"chunk-(\d{6}|[1-9]\d{6,})\.jsonl")
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
  checks.run_info(info, path, records.KINDS)
  return info


def write_run_info(directory: str, info: dict[str, Any]) -> None:
  storage.write_text(storage.join(directory, RUN_INFO), json.dumps(info, indent=1, sort_keys=True))


def chunk_name(number: int) -> str:
  return f"chunk-{number:06d}.jsonl"


def chunk_number(name: str) -> int:
  return int(_CHUNK.fullmatch(name).group(1))


def chunk_names(directory: str, quiet: bool = False) -> list[str]:
  """Names of the chunk files of a run, in number order; other top-level files are ignored
  (with a warning unless `quiet`)."""
  names = []
  for name in storage.list_files(directory):
    if _CHUNK.fullmatch(name):
      names.append(name)
    elif "/" not in name and name not in (RUN_INFO, COMPLETE, LEASE) and not quiet:
      warn(f"{storage.join(directory, name)}: ignored (not a chunk name: chunk-NNNNNN.jsonl)")
  return sorted(names, key=chunk_number)


def read_records(directory: str) -> list[records.Record]:
  """Every record of a run's chunks, in chunk order; a bad line raises naming FILE:LINE."""
  return [r for name in chunk_names(directory, quiet=True)
          for r in records.parse_chunk(storage.join(directory, name),
                                       storage.read_bytes(storage.join(directory, name)))]


# ---------------------------------------------------------------------------- completeness


def _expected(info: dict[str, Any]) -> tuple[int, int, tuple[str, ...]]:
  return int(info["n_examples"]), int(info["n_records"]), tuple(info["record_kinds"])


def _chunk_problem(directory: str, name: str, data: bytes, info: dict[str, Any],
                   seen: set[int]) -> tuple[str | None, list[records.Record]]:
  """Why a chunk cannot be kept (None if it can), and its records (none if it cannot)."""
  path = storage.join(directory, name)
  try:
    recs = records.parse_chunk(path, data)
  except ValueError as e:
    return str(e), []
  n_examples, _, kinds = _expected(info)
  by_example: dict[int, list[records.Record]] = {}
  for r in recs:
    if (r.run_key, r.model, r.task, r.variant) != (info["run_key"], info["model"]["name"],
                                                   info["task"], info["variant"]):
      return f"holds a record of another run ({r.run_key} {r.model} {r.task}.{r.variant})", []
    if not 0 <= r.example_id < n_examples:
      return f"example {r.example_id} is not one of the run's {n_examples}", []
    by_example.setdefault(r.example_id, []).append(r)
  if not by_example:
    return "holds no records", []
  for example, example_recs in sorted(by_example.items()):
    problem = records.example_problem(example_recs, kinds)
    if problem:
      return f"example {example}: {problem}", []
  repeated = sorted(set(by_example) & seen)
  if repeated:
    return f"repeats examples {repeated[:5]} of an earlier chunk", []
  return None, recs


def _canonical(value: Any) -> Any:
  return json.loads(json.dumps(value, sort_keys=True))


def _key_problem(info: dict[str, Any], expected: dict[str, Any]) -> str | None:
  """What in run.json differs from the key parts `expected` (the plan's), None if nothing."""
  differ = [k for k, v in expected.items() if _canonical(info.get(k)) != _canonical(v)]
  if differ:
    return (f"its run.json is not this run's ({', '.join(sorted(differ))} differ: a run "
            f"copied under another key?)")
  return None


def _listed(directory: str) -> dict[str, str] | None:
  """The chunks and sha256 that the run's COMPLETE lists (None: no valid COMPLETE)."""
  data = storage.read_stamped(storage.join(directory, COMPLETE)).data
  return None if data is None else _parse_listed(data)


def _parse_listed(marker: bytes) -> dict[str, str] | None:
  try:
    listed = json.loads(marker)["chunks"]
  except (ValueError, KeyError, TypeError, RecursionError):
    return None
  if not (isinstance(listed, dict) and all(isinstance(v, str) for v in listed.values())):
    return None
  return listed


def verify_complete(directory: str, info: dict[str, Any] | None = None,
                    expected: dict[str, Any] | None = None) -> str | None:
  """None if the run is complete (see the module docstring), else what is wrong;
  `expected`: key parts run.json must hold (the plan's)."""
  marker = storage.read_stamped(storage.join(directory, COMPLETE)).data
  if marker is None:
    return NO_MARKER
  listed = _parse_listed(marker)
  try:
    info = info or read_run_info(directory)
    n_examples, n_records, kinds = _expected(info)
  except (ValueError, KeyError, TypeError, FileNotFoundError):
    listed = None
  if listed is None:
    return "COMPLETE or run.json is not what this version writes"
  problem = _key_problem(info, expected) if expected else None
  if problem:
    return problem
  present = chunk_names(directory, quiet=True)
  if sorted(listed) != sorted(present):
    return (f"COMPLETE lists chunks {sorted(listed)} but the run holds {present}")
  seen: set[int] = set()
  total = 0
  for name in present:
    data = storage.read_bytes(storage.join(directory, name))
    if hashlib.sha256(data).hexdigest() != listed[name]:
      return f"{name} changed after the run was completed"
    problem, recs = _chunk_problem(directory, name, data, info, seen)
    if problem:
      return f"{name}: {problem}"
    seen |= {r.example_id for r in recs}
    total += len(recs)
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


def _pid_namespace() -> str | None:
  """This process's PID namespace (pids of one host name are comparable only within it:
  containers with the host's network share its name, not its pids)."""
  try:
    return os.readlink("/proc/self/ns/pid")
  except OSError:
    return None


def _now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _holder(data: bytes) -> dict[str, Any] | None:
  """The holder a LEASE file names, or None if it is not a lease this version writes."""
  try:
    holder = json.loads(data)
  except (ValueError, RecursionError):
    return None
  if not isinstance(holder, dict):
    return None
  expires, pid = holder.get("expires"), holder.get("pid")
  horizon = time.time() + max(2 * _lease_seconds(), 86400.0)
  valid = (isinstance(expires, (int, float)) and not isinstance(expires, bool)
           and math.isfinite(expires) and expires <= horizon
           and isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31
           and all(isinstance(holder.get(k), str) for k in ("host", "id", "since")))
  return holder if valid else None


class Lease:
  """The right to write one run, held by this process until released or expired."""

  def __init__(self, directory: str, label: str):
    self.path = storage.join(directory, LEASE)
    self.label = label
    self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "id": uuid.uuid4().hex,
                   "since": _now(), "pid_namespace": _pid_namespace()}
    self._generation: bytes | None = None
    self._lock = threading.Lock()  # renewals (the keeper's thread) against release
    self.lost = False

  def _body(self) -> bytes:
    return json.dumps(dict(self.holder, expires=time.time() + _lease_seconds())).encode()

  def takeable(self, current: dict[str, Any]) -> bool:
    """Whether the stored lease `current` may be taken: expired, or left by a dead
    process of this host."""
    if current["expires"] < time.time():
      return True
    same_host = (current["host"] == self.holder["host"]
                 and current.get("pid_namespace") == self.holder["pid_namespace"])
    return same_host and not _pid_alive(current["pid"])

  def busy(self, current: dict[str, Any]) -> RunBusy:
    expires = datetime.datetime.fromtimestamp(current["expires"])
    return RunBusy(
        f"{self.label}: being scored by pid {current['pid']} on {current['host']} since "
        f"{current['since']} (its lease, {self.path}, is renewed while it works and expires "
        f"at {expires:%H:%M:%S} if it stops)")

  def acquire(self) -> None:
    """Takes the lease, or raises RunBusy naming its holder."""
    for _ in range(10):
      stamp = storage.read_stamped(self.path)
      if stamp.data is None:
        if storage.create(self.path, self._body()):
          self._generation = storage.read_stamped(self.path).generation
          return
        continue
      current = _holder(stamp.data)
      if current is not None and not self.takeable(current):
        raise self.busy(current)
      self._generation = storage.replace(self.path, self._body(), stamp.generation)
      if self._generation is not None:
        warn(f"{self.label}: took over the lease of pid {current['pid']} on "
             f"{current['host']}, which is gone or expired" if current else
             f"{self.label}: {self.path} was not a lease this version writes "
             f"({len(stamp.data)} bytes); took it over")
        return
    raise RunBusy(f"{self.label}: could not take {self.path} (other processes kept changing it)")

  def renew(self) -> None:
    with self._lock:
      if self.lost or self._generation is None:
        return
      self._generation = storage.replace(self.path, self._body(), self._generation)
      if self._generation is None:
        self.lost = True

  def check(self) -> None:
    """Raises LeaseLost unless the stored lease is still this process's."""
    if not self.lost:
      stored = storage.read_stamped(self.path).data
      current = _holder(stored) if stored is not None else None
      self.lost = current is None or current["id"] != self.holder["id"]
    if self.lost:
      raise LeaseLost(f"{self.label}: another process took over {self.path}; stopped "
                      f"without writing more (the chunks written are kept)")

  def release(self) -> None:
    with self._lock:
      if self._generation is not None and not self.lost:
        storage.replace(self.path, None, self._generation)
      self._generation = None


def drop_stale_lease(directory: str, label: str) -> None:
  """Removes the LEASE of a complete run whose holder is gone (killed between writing
  COMPLETE and releasing it), so a finished run holds no lease; a live holder's is kept.
  Lock files of writes killed mid-way (e.g. while releasing the lease) are dropped too."""
  lease = Lease(directory, label)
  stamp = storage.read_stamped(lease.path)
  if stamp.data is not None:
    current = _holder(stamp.data)
    if current is None or lease.takeable(current):
      storage.replace(lease.path, None, stamp.generation)
  storage.drop_stale_locks(directory)


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


def claim(directory: str, label: str, expected: dict[str, Any] | None = None) -> Lease | None:
  """Takes the run's lease (RunBusy if a live writer holds it); None, holding nothing, if
  the run is complete by then (another process finished it since it was last checked)."""
  lease = Lease(directory, label)
  lease.acquire()
  try:
    complete = verify_complete(directory, expected=expected) is None
  except BaseException:
    lease.release()
    raise
  if complete:
    lease.release()
    return None
  return lease


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
    records.check_finite(recs, self.lease.label)
    path = storage.join(self.directory, chunk_name(self.next_chunk))
    data = records.format_chunk(recs)
    records.parse_chunk(path, data)  # what a reader will accept, or an error naming it
    self.lease.check()
    if not storage.create(path, data):
      raise LeaseLost(f"{path}: already exists: another process is writing this run")
    self.next_chunk += 1
    self.done |= {r.example_id for r in recs}

  def finish(self, stats: dict[str, Any] | None = None) -> None:
    """Writes COMPLETE once every example is in a chunk, verified as a reader would;
    `stats` (e.g. tokens and seconds of this session's work) are kept in it."""
    names = chunk_names(self.directory, quiet=True)
    digests = {n: hashlib.sha256(storage.read_bytes(storage.join(self.directory, n))).hexdigest()
               for n in names}
    marker = {"chunks": digests, "completed": _now(), **(stats or {})}
    self.lease.check()
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
  """Checks every chunk of a run (reads, never writes). When COMPLETE is there, a chunk it
  does not list, or lists with another sha256, is bad: it changed after the run ended."""
  found = Scan(set(), [], [], 0)
  listed = _listed(directory)
  for name in chunk_names(directory, quiet):
    path = storage.join(directory, name)
    data = storage.read_bytes(path)
    found.next_chunk = max(found.next_chunk, chunk_number(name) + 1)
    if listed is not None and listed.get(name) != hashlib.sha256(data).hexdigest():
      found.bad.append((name, "changed after the run was completed" if name in listed
                        else "added after the run was completed"))
      continue
    problem, recs = _chunk_problem(directory, name, data, info, found.done)
    if problem:
      found.bad.append((name, problem))
    else:
      found.done |= {r.example_id for r in recs}
      found.records += recs
  return found


def open_run(directory: str, info: dict[str, Any], label: str, keeper: LeaseKeeper,
             lease: Lease | None = None) -> RunWriter:
  """Keeps the good chunks already there (bad ones are moved aside) and writes run.json;
  returns the writer of the rest. `lease`: the run's lease, taken by `claim` (else it is
  taken here); the keeper renews it."""
  if lease is None:
    lease = Lease(directory, label)
    lease.acquire()
  if lease not in keeper.leases:
    keeper.leases.append(lease)
  # Writes cut by kill -9 leave tensorstore's `<file>.__lock`: the lease holder drops them.
  storage.drop_stale_locks(directory)
  found = scan(directory, info)
  for name, problem in found.bad:
    _reject(directory, name, problem)
  storage.delete(storage.join(directory, COMPLETE))  # re-verified when the run finishes
  write_run_info(directory, info)
  return RunWriter(directory, info, lease, found.done, found.next_chunk)
