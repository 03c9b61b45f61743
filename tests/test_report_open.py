"""`invscale report ... --open`: report.html in a browser, from a local directory or from a
bucket (through a local copy); without a browser, the path to open by hand."""

from __future__ import annotations

import pathlib
import webbrowser

import pytest

from conftest import RunCli
from invscale_jax import storage
from invscale_jax.report import output
from test_report_end_to_end import small_results

FAST = ("--resamples", "50")


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
  """The URLs handed to the browser (none is started: `webbrowser.open` says it did)."""
  urls = []
  monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: urls.append(url) or True)
  return urls


def test_a_local_report_is_opened(tmp_path: pathlib.Path, run_cli: RunCli,
                                  opened: list[str]) -> None:
  results, out = small_results(tmp_path / "results"), tmp_path / "report"
  result = run_cli("report", results, "--out", out, "--open", *FAST)
  assert result.code == 0, result.err
  page = out / "report.html"
  assert opened == [page.as_uri()]
  assert result.out == f"report written to {out}\nopened {page} in a browser\n"


def test_without_a_browser_the_path_is_printed(tmp_path: pathlib.Path, run_cli: RunCli,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
  # What webbrowser.open answers when it finds no browser to start.
  monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: False)
  results, out = small_results(tmp_path / "results"), tmp_path / "report"
  result = run_cli("report", results, "--out", out, "--open", *FAST)
  assert result.code == 0, result.err
  assert result.out.splitlines()[-1] == f"no browser found; open {out / 'report.html'}"


def test_a_report_in_a_bucket_is_copied_then_opened(tmp_path: pathlib.Path, bucket: str,
                                                    run_cli: RunCli, opened: list[str]) -> None:
  results, url = small_results(tmp_path / "results"), f"{bucket}/report"
  copies = []
  for n in (1, 2):  # the second report replaces the first one's local copy
    result = run_cli("report", results, "--out", url, "--open", "--seed", str(n), *FAST)
    assert result.code == 0, result.err
    page = pathlib.Path(result.out.splitlines()[-1].removeprefix("opened ").removesuffix(
        " in a browser"))
    assert opened[-1] == page.as_uri() and page.name == "report.html"
    assert page.is_relative_to(storage.user_cache_dir())
    for name in output.FILES:
      assert (page.parent / name).read_bytes() == storage.read_bytes(f"{url}/{name}"), name
    copies.append((page.parent / "metrics.json").read_bytes())
  assert len(set(opened)) == 1 and copies[0] != copies[1]  # one local copy per URL, refreshed
