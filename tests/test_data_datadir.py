"""Which data directory is used: flag > gin macro INVSCALE_DATA_DIR > $INVSCALE_DATA_DIR > default."""

from __future__ import annotations

import pathlib

import gin
import pytest

from invscale_jax import catalog
from invscale_jax.data import datadir


def test_resolution_order(clean_gin: None, monkeypatch: pytest.MonkeyPatch,
                          tmp_path: pathlib.Path) -> None:
  flag, bound, env = (str(tmp_path / n) for n in ("flag", "gin", "env"))
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.delenv(datadir.ENV_VAR, raising=False)
  default = str(tmp_path / "home" / ".cache" / "invscale_jax" / "inverse_scaling")
  assert datadir.resolve() == default
  assert datadir.resolve(flag) == flag

  monkeypatch.setenv(datadir.ENV_VAR, env)
  assert datadir.resolve() == env
  assert datadir.resolve(flag) == flag

  gin.parse_config(f"INVSCALE_DATA_DIR = '{bound}'")
  assert datadir.resolve() == bound  # gin beats the env
  assert datadir.resolve(flag) == flag  # the flag beats gin

  gin.clear_config()
  assert datadir.resolve() == env
  monkeypatch.delenv(datadir.ENV_VAR)
  assert datadir.resolve() == default


def test_empty_values_fall_through(clean_gin: None, monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: pathlib.Path) -> None:
  """An empty flag or env var means "not given", not the current directory."""
  monkeypatch.setenv(datadir.ENV_VAR, "")
  monkeypatch.setenv("HOME", str(tmp_path))
  assert datadir.resolve("") == str(tmp_path / ".cache" / "invscale_jax" / "inverse_scaling")


def test_user_home_is_expanded(clean_gin: None, monkeypatch: pytest.MonkeyPatch,
                               tmp_path: pathlib.Path) -> None:
  monkeypatch.setenv("HOME", str(tmp_path))
  gin.parse_config("INVSCALE_DATA_DIR = '~/tasks'")
  assert datadir.resolve() == str(tmp_path / "tasks")


def test_load_task_names_the_missing_file_and_the_remedy(tmp_path: pathlib.Path) -> None:
  with pytest.raises(FileNotFoundError) as raised:
    datadir.load_task(tmp_path, "sig_figs")  # SeqIO-style names are accepted too
  message = str(raised.value)
  assert str(tmp_path / catalog.get("sig-figs").filename) in message
  assert "invscale data download" in message and datadir.ENV_VAR in message


def test_unknown_task_lists_the_known_ones() -> None:
  with pytest.raises(KeyError, match="unknown task 'memo-trick'.*memo-trap"):
    catalog.get("memo-trick")
