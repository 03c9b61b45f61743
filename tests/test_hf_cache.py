"""`hf:ORG/NAME` models from the local Hugging Face cache (the layout huggingface_hub
writes: models--ORG--NAME/snapshots/<commit>/, files linked to blobs/), never downloaded."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

import hf_tiny
from conftest import RunCli
from invscale_jax import family as family_lib
from invscale_jax import hf_cache

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_layout(model_dir: pathlib.Path, cache: pathlib.Path, repo: str) -> pathlib.Path:
  """`model_dir`'s files as huggingface_hub caches them; returns the snapshot directory."""
  root = cache / f"models--{repo.replace('/', '--')}"
  snapshot = root / "snapshots" / COMMIT
  snapshot.mkdir(parents=True)
  (root / "blobs").mkdir()
  for f in model_dir.iterdir():
    blob = root / "blobs" / f"blob-{f.name}"
    os.replace(f, blob)
    (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
  (root / "refs").mkdir()
  (root / "refs" / "main").write_text(COMMIT)
  return snapshot


def test_hf_names_resolve_in_the_local_cache(tmp_path, monkeypatch, text_examples,
                                             run_cli: RunCli) -> None:
  cache = tmp_path / "hub"
  texts = [p + c for p, classes in text_examples for c in classes]
  snapshot = cache_layout(hf_tiny.make("gpt2", tmp_path / "made", texts), cache,
                          "acme/tiny-gpt2")
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  assert hf_cache.resolve("hf:acme/tiny-gpt2") == str(snapshot)
  assert hf_cache.resolve(f"hf:acme/tiny-gpt2@{COMMIT}") == str(snapshot)
  monkeypatch.delenv("HF_HUB_CACHE")
  monkeypatch.setenv("HF_HOME", str(tmp_path))  # $HF_HOME/hub
  out = tmp_path / "acme-models" / "manifest.json"
  made = run_cli("family", "from-hf", "hf:acme/tiny-gpt2", "--out", out)
  assert made.code == 0, made.err
  manifest = json.loads(out.read_text())
  assert manifest["family"] == "acme-models"  # the directory's name, not "manifest"
  (entry,) = manifest["models"]
  assert (entry["name"], entry["hf_dir"]) == ("tiny-gpt2", "hf:acme/tiny-gpt2")
  (model,) = family_lib.load(out).models
  direct = run_cli("score", "--family", "hf:acme/tiny-gpt2", "--out", tmp_path / "r")
  assert direct.code == 2 and "`invscale family from-hf hf:acme/tiny-gpt2 --out " in direct.err
  assert (model.checkpoint, model.checkpoint_format) == (str(snapshot), "hf")
  # Absent models and revisions: one line saying so, and nothing fetched.
  absent = run_cli("family", "from-hf", "hf:acme/tiny-llama", "--out", tmp_path / "x.json")
  assert absent.code == 2 and absent.err.startswith(
      f"invscale: error: hf:acme/tiny-llama: not in the local Hugging Face cache "
      f"({tmp_path / 'hub'}, from HF_HUB_CACHE / HF_HOME); download it first, e.g. "
      f"`huggingface-cli download acme/tiny-llama`")
  with pytest.raises(FileNotFoundError, match="revision v2 .* is not in the local"):
    hf_cache.resolve("hf:acme/tiny-gpt2@v2")
  entry["hf_dir"] = "hf:acme/gone"
  out.write_text(json.dumps(manifest))
  with pytest.raises(family_lib.ManifestError, match=r"models\[0\]: hf_dir: hf:acme/gone: not"):
    family_lib.load(out)
