"""T5X model dirs scored as they are: `invscale family from-t5x` on a model dir holding
T5X's config.gin and an Orbax checkpoint_0 (T5X's default layout) gives a manifest that
`invscale score` uses unchanged, with the scores of the same parameters under a
hand-written manifest (our gin file, legacy checkpoint)."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

from conftest import T5X_CONFIG_GIN
from invscale_jax import checkpoints, family, results
from invscale_jax.models.config import ModelConfig, to_gin

# The network T5X_CONFIG_GIN binds, as our ModelConfig.
from invscale_jax.models.model import build

# The network T5X_CONFIG_GIN binds, as our ModelConfig.
CONFIG = ModelConfig(architecture="decoder_only", vocab_size=384, emb_dim=32, num_heads=2,
                     head_dim=16, mlp_dim=64, num_layers=2, mlp_activations=("gelu", "linear"),
                     logits_via_embedding=True, dtype="float32")


def random_params(seed: int) -> dict:
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (rng.standard_normal(s.shape) / np.sqrt(s.shape[0])
                                 ).astype(np.float32), build(CONFIG).param_shapes())


def t5x_model_dir(root: pathlib.Path, steps: dict[int, int]) -> pathlib.Path:
  """A T5X model dir: config.gin and checkpoint_<step> (Orbax) for each {step: seed}."""
  root.mkdir(parents=True)
  (root / "config.gin").write_text(T5X_CONFIG_GIN)
  for step, seed in steps.items():
    checkpoints.write_checkpoint(root, random_params(seed), step=step, format="orbax")
  return root


def scores(run_cli, manifest: pathlib.Path, data_dir: pathlib.Path,
           out: pathlib.Path) -> dict[tuple[int, int], float]:
  result = run_cli("score", "--family", manifest, "--tasks", "memo-trap", "--data_dir", data_dir,
                   "--out", out)
  assert result.code == 0, result.err
  [run_dir] = results.run_dirs(out)
  return {(r.example_id, r.class_index): r.logprob for r in results.read_records(run_dir)}


def test_model_dir_scores_as_hand_written_manifest(tmp_path, small_data_dir, run_cli):
  model_dir = t5x_model_dir(tmp_path / "t5x" / "dec-tiny", {0: 7})
  manifest = tmp_path / "t5x_family.json"
  result = run_cli("family", "from-t5x", "--out", manifest, model_dir, "--train_tokens", "2e9")
  assert result.code == 0, result.err
  n_params = build(CONFIG).num_params()
  assert json.loads(manifest.read_text())["models"] == [{
      "name": "dec-tiny", "t5x_model_dir": "t5x/dec-tiny", "architecture": "decoder_only",
      "vocabulary": {"type": "byte"}, "n_params": n_params, "train_tokens": 2e9}]

  hand = tmp_path / "hand"
  checkpoints.write_checkpoint(hand / "dec-tiny", random_params(7))  # legacy layout
  (hand / "model.gin").write_text(to_gin(CONFIG))
  (hand / "manifest.json").write_text(json.dumps({"family": "hand", "models": [{
      "name": "dec-tiny", "architecture": "decoder_only", "gin": "model.gin",
      "checkpoint": "dec-tiny/checkpoint_0", "vocabulary": {"type": "byte"}}]}))

  got = scores(run_cli, manifest, small_data_dir, tmp_path / "results_t5x")
  want = scores(run_cli, hand / "manifest.json", small_data_dir, tmp_path / "results_hand")
  assert len(got) == 2 * 24 and got == want  # 24 memo-trap rows, 2 classes each
  assert len(set(got.values())) > 24  # a real forward pass, not a constant


def test_latest_or_given_step_and_gin_file_sources(tmp_path, run_cli):
  model_dir = t5x_model_dir(tmp_path / "dec", {0: 1, 10: 2})
  (model_dir / "checkpoint_20.orbax-checkpoint-tmp-123").mkdir()  # an unfinished save
  latest = tmp_path / "latest.json"
  assert run_cli("family", "from-t5x", "--out", latest, model_dir).code == 0
  [entry] = family.load(latest).models
  assert entry.checkpoint == str(model_dir / "checkpoint_10")
  assert entry.gin == str(model_dir / "config.gin") and entry.vocabulary == {"type": "byte"}

  pinned = tmp_path / "pinned.json"
  gin_file = tmp_path / "other.gin"
  gin_file.write_text(T5X_CONFIG_GIN)
  assert run_cli("family", "from-t5x", "--out", pinned, model_dir, gin_file, "--step", "0",
                 "--checkpoint", model_dir / "checkpoint_10", "--name", "a,b").code == 0
  models = family.load(pinned).models
  assert [m.checkpoint for m in models] == [str(model_dir / "checkpoint_0"),
                                            str(model_dir / "checkpoint_10")]
  assert [m.gin for m in models] == [str(model_dir / "config.gin"), str(gin_file)]
  assert json.loads(pinned.read_text())["models"][0]["step"] == 0


@pytest.mark.parametrize("args,message", [
    (["{tmp}"], "{tmp}: no config.gin: not a T5X model dir"),
    (["{tmp}/dec/config.gin"], "{tmp}/dec/config.gin: a gin file needs its checkpoint: pass "
                               "--checkpoint"),
    (["{tmp}/dec", "--name", "a,b"], "--name: 2 names for 1 models"),
    (["{tmp}/dec", "{tmp}/dec"], "--name: duplicate model names dec"),
    (["{tmp}/wide/config.gin", "--checkpoint", "{tmp}/dec"],
     "{tmp}/dec/checkpoint_0: holds 32,992 parameters, the network of {tmp}/wide/config.gin "
     "has 65,920"),
])
def test_from_t5x_errors_are_one_line(tmp_path, run_cli, args, message):
  t5x_model_dir(tmp_path / "dec", {0: 1})
  (tmp_path / "wide").mkdir()
  (tmp_path / "wide" / "config.gin").write_text(T5X_CONFIG_GIN.replace(
      "network.TransformerConfig.emb_dim = 32", "network.TransformerConfig.emb_dim = 64"))
  out = tmp_path / "manifest.json"
  result = run_cli("family", "from-t5x", "--out", out, *[a.format(tmp=tmp_path) for a in args])
  assert result.code == 2
  assert result.err == f"invscale: error: {message.format(tmp=tmp_path)}\n"
  assert not out.exists()


def test_manifest_entries_naming_t5x_files(tmp_path):
  """Hand-written entries: a model dir (latest or given step) or a T5X gin file with a
  checkpoint; the vocabulary defaults to the gin file's, a gs:// one stays a URL."""
  model_dir = t5x_model_dir(tmp_path / "dec", {0: 1})
  gs_gin = tmp_path / "gs.gin"
  gs_gin.write_text(T5X_CONFIG_GIN.replace(
      "VOCABULARY = @seqio.ByteVocabulary()", "VOCABULARY = @seqio.SentencePieceVocabulary()\n"
      "seqio.SentencePieceVocabulary.sentencepiece_model_file = 'gs://b/spm.model'"))
  manifest = tmp_path / "m.json"

  def load(*models: dict) -> family.Family:
    manifest.write_text(json.dumps({"models": list(models)}))
    return family.load(manifest)

  a, b = load({"name": "a", "t5x_model_dir": "dec"},
              {"name": "b", "gin": "gs.gin", "checkpoint": "dec/checkpoint_0"}).models
  assert a.checkpoint == b.checkpoint == str(model_dir / "checkpoint_0")
  assert a.architecture == b.architecture == "decoder_only"
  assert (b.vocabulary["type"], b.vocabulary["path"]) == ("sentencepiece", "gs://b/spm.model")
  for entry, message in (
      ({"name": "a", "t5x_model_dir": "dec", "step": 5},
       f"models[0]: t5x_model_dir: {model_dir}/checkpoint_5: no such checkpoint"),
      ({"name": "a", "t5x_model_dir": "dec", "gin": "gs.gin"},
       "models[0]: t5x_model_dir: names the gin file and checkpoint itself"),
      ({"name": "a", "gin": "models/tiny/tiny_1.gin", "checkpoint": "dec"},
       "models[0]: architecture: missing"),
      ({"name": "a", "t5x_model_dir": ["dec"]},
       "models[0]: t5x_model_dir: must be a non-empty string, got ['dec']")):
    with pytest.raises(family.ManifestError) as raised:
      load(entry)
    assert str(raised.value).startswith(f"{manifest}: {message}")
