"""`invscale data download` against a local mirror on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import pathlib
import re
import shutil
import threading
import time
from typing import Iterator

import pytest

from conftest import CliResult, RunCli
from invscale_jax import catalog, storage
from invscale_jax.data import datadir, download

TASKS = ("memo-trap", "neqa")


OVERSIZE = 64 << 20  # what the /oversize/ mirror serves for every file
DRIP_INTERVAL, DRIP_FOR = 0.2, 8.0  # /drip/: one byte every 0.2 s, hanging up after 8 s


class MirrorHandler(http.server.SimpleHTTPRequestHandler):
  """Serves the mirror directory. Under /truncated/ it promises a whole file
  (Content-Length), sends half and hangs up; under /truncated-chunked/ it does the same
  with a chunked body; under /oversize/ it sends OVERSIZE bytes whatever the file; under
  /drip/ it promises the file and sends one byte every DRIP_INTERVAL s; under
  /drip-headers/ it sends even its headers that way. Every request path
  is recorded on the server, and the bytes /oversize/ managed to send once it is done."""

  def do_GET(self) -> None:  # pylint: disable=invalid-name
    self.server.requests.append(self.path)  # type: ignore[attr-defined]
    mode = self.path.split("/")[1]
    if mode in ("oversize", "drip", "drip-headers"):
      getattr(self, f"_{mode.replace('-', '_')}")()
      return
    if mode not in ("truncated", "truncated-chunked"):
      super().do_GET()
      return
    body = (pathlib.Path(self.directory) / "good" / self.path.rsplit("/", 1)[-1]).read_bytes()
    half = body[:len(body) // 2]
    self.protocol_version = "HTTP/1.1"
    self.send_response(200)
    if mode == "truncated":
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(half)
    else:
      self.send_header("Transfer-Encoding", "chunked")
      self.end_headers()
      self.wfile.write(b"%x\r\n%s\r\n" % (len(half), half))
      self.wfile.write(b"%x\r\n%s" % (len(body) - len(half), body[len(half):][:100]))
    self.wfile.flush()
    self.close_connection = True

  def _oversize(self) -> None:
    self.send_response(200)
    self.send_header("Content-Length", str(OVERSIZE))
    self.end_headers()
    sent, block = 0, b"x" * (64 << 10)
    try:
      while sent < OVERSIZE:
        self.wfile.write(block)
        sent += len(block)
    except OSError:  # the client hung up
      pass
    self.server.sent[self.path] = sent  # type: ignore[attr-defined]
    self.close_connection = True

  def _drip(self) -> None:
    body = (pathlib.Path(self.directory) / "good" / self.path.rsplit("/", 1)[-1]).read_bytes()
    self.send_response(200)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self._send_slowly(body)

  def _drip_headers(self) -> None:
    self._send_slowly(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nX-Padding: " + b"x" * 200)

  def _send_slowly(self, data: bytes) -> None:
    """Sends one byte every DRIP_INTERVAL s, for DRIP_FOR s at most."""
    stop = time.monotonic() + DRIP_FOR
    try:
      for byte in data:
        if time.monotonic() > stop:
          break
        self.wfile.write(bytes([byte]))
        self.wfile.flush()
        time.sleep(DRIP_INTERVAL)
    except OSError:
      pass
    self.close_connection = True

  def log_message(self, *args: object) -> None:
    del args


@dataclasses.dataclass(frozen=True)
class Mirror:
  url: str  # base URL of the server
  root: pathlib.Path  # the directory it serves
  requests: list[str]  # paths requested so far
  sent: dict[str, int]  # /oversize/ path -> bytes sent before the client hung up


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory, shared_data: pathlib.Path) -> Iterator[Mirror]:
  """A mirror with good/ (copies of the real files) and corrupt/ (one byte flipped)."""
  root = tmp_path_factory.mktemp("mirror")
  for sub in ("good", "corrupt"):
    (root / sub).mkdir()
  for task in TASKS:
    name = catalog.get(task).filename
    shutil.copy(shared_data / name, root / "good" / name)
    data = bytearray((shared_data / name).read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, different hash
    (root / "corrupt" / name).write_bytes(bytes(data))
  server = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(MirrorHandler, directory=str(root)))
  server.requests = []  # type: ignore[attr-defined]
  server.sent = {}  # type: ignore[attr-defined]
  thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                            daemon=True)
  thread.start()
  try:
    yield Mirror(f"http://127.0.0.1:{server.server_address[1]}", root,
                 server.requests, server.sent)  # type: ignore[attr-defined]
  finally:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
  """Requests go straight to 127.0.0.1, and a forgotten --base_url cannot reach the internet."""
  for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
  monkeypatch.setenv(download.URL_ENV_VAR, "http://127.0.0.1:9/unused")


def download_cli(run_cli: RunCli, data_dir: pathlib.Path, base_url: str) -> CliResult:
  return run_cli("data", "download", "--data_dir", data_dir, "--base_url", base_url,
                 "--tasks", ",".join(TASKS))


def test_download_fetches_verifies_and_does_not_refetch(
    run_cli: RunCli, mirror: Mirror, tmp_path: pathlib.Path) -> None:
  url, requests = mirror.url, mirror.requests
  data_dir = tmp_path / "data"
  requests.clear()
  result = download_cli(run_cli, data_dir, f"{url}/good/")
  assert (result.code, result.err) == (0, "")
  specs = [catalog.get(t) for t in TASKS]
  assert result.out.splitlines() == [f"{s.name}: downloaded and verified ({s.size} bytes)"
                                     for s in specs]
  assert sorted(p.name for p in data_dir.iterdir()) == sorted(s.filename for s in specs)
  for spec in specs:
    assert hashlib.sha256((data_dir / spec.filename).read_bytes()).hexdigest() == spec.sha256
  assert sorted(requests) == sorted(f"/good/{s.filename}" for s in specs)

  requests.clear()
  again = download_cli(run_cli, data_dir, f"{url}/good")
  assert again.code == 0
  assert again.out.splitlines() == [f"{t}: already verified" for t in TASKS]
  assert requests == []

  # A file that is present but not the official one is fetched again and replaced.
  (data_dir / specs[1].filename).write_text("stale\n")
  third = download_cli(run_cli, data_dir, f"{url}/good")
  assert third.code == 0 and requests == [f"/good/{specs[1].filename}"]
  assert datadir.sha256_of(data_dir / specs[1].filename) == specs[1].sha256
  rows = {s.spec.name: (s.state, s.rows) for s in datadir.status(data_dir)}
  assert rows["memo-trap"] == ("verified", 936) and rows["neqa"] == ("verified", 300)


def test_download_into_a_bucket(run_cli: RunCli, mirror: Mirror, bucket: str) -> None:
  """A gs:// data dir: files are checked before they are uploaded, each as one object."""
  data_dir = f"{bucket}/data"
  assert download_cli(run_cli, data_dir, f"{mirror.url}/corrupt").code != 0
  assert list(storage.list_files(bucket)) == []  # nothing half-written
  result = download_cli(run_cli, data_dir, f"{mirror.url}/good")
  assert (result.code, result.err) == (0, "")
  rows = {s.spec.name: (s.state, s.rows) for s in datadir.status(data_dir)}
  assert rows["memo-trap"] == ("verified", 936) and rows["neqa"] == ("verified", 300)
  again = download_cli(run_cli, data_dir, f"{mirror.url}/good")
  assert again.out.splitlines() == [f"{t}: already verified" for t in TASKS]


def test_corrupt_mirror_errors_and_leaves_nothing(
    run_cli: RunCli, mirror: Mirror, tmp_path: pathlib.Path) -> None:
  url = mirror.url
  data_dir = tmp_path / "data"
  result = download_cli(run_cli, data_dir, f"{url}/corrupt")
  assert result.code != 0
  errors = result.err.splitlines()
  assert len(errors) == len(TASKS)
  for line, task in zip(errors, TASKS):
    spec = catalog.get(task)
    served = datadir.sha256_of(mirror.root / "corrupt" / spec.filename)
    assert line.startswith(f"invscale: error: {url}/corrupt/{spec.filename}: ")
    assert served[:12] in line and spec.sha256[:12] in line
  assert list(data_dir.iterdir()) == []  # no file, no temporary .part file


@pytest.mark.parametrize("mode", ["truncated", "truncated-chunked"])
def test_interrupted_transfer_leaves_nothing(
    mode: str, run_cli: RunCli, mirror: Mirror, tmp_path: pathlib.Path) -> None:
  """The server hangs up mid-body: each task fails on one line, and the next is still tried."""
  url = mirror.url
  data_dir = tmp_path / "data"
  result = download_cli(run_cli, data_dir, f"{url}/{mode}")
  assert result.code != 0
  errors = result.err.splitlines()
  assert len(errors) == len(TASKS)
  for line, task in zip(errors, TASKS):
    spec = catalog.get(task)
    assert line.startswith(f"invscale: error: {url}/{mode}/{spec.filename}: ")
    if mode == "truncated":  # urllib returns the short body: caught by the size/hash check
      assert f"got {spec.size // 2} bytes" in line and spec.sha256[:12] in line
    else:
      assert "download failed: IncompleteRead" in line
  assert list(data_dir.iterdir()) == []


def test_missing_file_on_mirror_is_one_line_error(
    run_cli: RunCli, mirror: Mirror, tmp_path: pathlib.Path) -> None:
  url = mirror.url
  data_dir = tmp_path / "data"
  result = download_cli(run_cli, data_dir, f"{url}/nowhere")
  assert result.code != 0
  errors = result.err.splitlines()
  assert len(errors) == len(TASKS)
  assert all("download failed" in e and "404" in e and f"{url}/nowhere/" in e for e in errors)
  assert list(data_dir.iterdir()) == []


def test_unknown_task_is_a_user_error(run_cli: RunCli, tmp_path: pathlib.Path) -> None:
  result = run_cli("data", "download", "--data_dir", tmp_path, "--tasks", "memo-trick")
  assert result.code == 2
  assert result.err.startswith("invscale: error: unknown task 'memo-trick'")
  assert list(tmp_path.iterdir()) == []


def test_oversized_file_is_not_read_past_its_official_size(
    run_cli: RunCli, mirror: Mirror, tmp_path: pathlib.Path) -> None:
  """A mirror serving 64 MiB for a smaller file: the client stops at the official size + 1."""
  data_dir = tmp_path / "data"
  result = run_cli("data", "download", "--data_dir", data_dir, "--base_url",
                   f"{mirror.url}/oversize", "--tasks", "neqa")
  spec = catalog.get("neqa")
  assert result.code == 1
  assert result.err == (f"invscale: error: {mirror.url}/oversize/{spec.filename}: not the "
                        f"official {spec.filename} (larger than its {spec.size} bytes); "
                        "stopped reading\n")
  assert list(data_dir.iterdir()) == []
  path = f"/oversize/{spec.filename}"
  deadline = time.monotonic() + 10
  while path not in mirror.sent and time.monotonic() < deadline:  # the server's last write
    time.sleep(0.05)
  assert mirror.sent[path] < OVERSIZE // 4  # the client hung up long before the end


@pytest.mark.parametrize("mode", ["drip", "drip-headers"])
def test_dripping_mirror_stops_at_the_time_limit(
    run_cli: RunCli, mirror: Mirror, tmp_path: pathlib.Path, mode: str) -> None:
  """One byte every 0.2 s, of the body or even of the headers, never trips a per-read
  timeout; the overall limit stops it."""
  data_dir = tmp_path / "data"
  start = time.monotonic()
  result = run_cli("data", "download", "--data_dir", data_dir, "--base_url",
                   f"{mirror.url}/{mode}", "--tasks", "neqa", "--time_limit", "1")
  elapsed = time.monotonic() - start
  spec = catalog.get("neqa")
  assert result.code == 1 and elapsed < DRIP_FOR / 2
  assert re.fullmatch(
      f"invscale: error: {mirror.url}/{mode}/{spec.filename}: download failed: not finished "
      rf"within the time limit of 1 s \(\d+ of {spec.size} bytes\)\n", result.err), result.err
  assert list(data_dir.iterdir()) == []


def test_downloaded_files_respect_the_umask(
    run_cli: RunCli, mirror: Mirror, tmp_path: pathlib.Path) -> None:
  old = os.umask(0o022)
  try:
    result = run_cli("data", "download", "--data_dir", tmp_path / "data", "--base_url",
                     f"{mirror.url}/good", "--tasks", "neqa")
  finally:
    os.umask(old)
  assert result.code == 0, result.err
  assert (tmp_path / "data" / catalog.get("neqa").filename).stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("bad", ["file", "time_limit"])
def test_bad_data_dir_or_time_limit_is_one_line(
    bad: str, run_cli: RunCli, tmp_path: pathlib.Path) -> None:
  data_dir = tmp_path / "data"
  args = ["--time_limit", "0"] if bad == "time_limit" else []
  if bad == "file":
    data_dir.write_text("not a directory\n")
  result = run_cli("data", "download", "--data_dir", data_dir, "--tasks", "neqa", *args)
  message = ("the data directory is a file, not a directory" if bad == "file"
             else "--time_limit must be a positive number of seconds, got 0.0")
  assert result.code == 2 and result.err.count("\n") == 1 and message in result.err
