"""Reading T5X's own gin files (`models.t5x_gin`) without t5x.

The files are written here in T5X's formats: model files of a t5x checkout (a base file
with imports, macros, block bindings and @references; size files that `include` it by
its repository path and override a block), and the flat `config.gin` T5X writes into a
model dir (gin.config_str(): imports, a macros section, one binding per line, scoped
bindings of the run).
"""

from __future__ import annotations

import pathlib
import textwrap

import pytest

from conftest import T5X_CONFIG_GIN
from invscale_jax.models import t5x_gin
from invscale_jax.models.config import load_config

T5_BASE = """\
# An encoder-decoder base file, in the form of t5x/examples/t5/t5_1_1/base.gin.
from __gin__ import dynamic_registration

import seqio
from t5x import adafactor
from t5x import models
from t5x.examples.{example} import network

DROPOUT_RATE = %gin.REQUIRED
VOCABULARY = {vocabulary}
seqio.SentencePieceVocabulary.sentencepiece_model_file = "gs://bucket/vocab/spm.model"

OPTIMIZER = @adafactor.Adafactor()
adafactor.Adafactor:
  decay_rate = 0.8
  logical_factor_rules = @adafactor.standard_logical_factor_rules()

MODEL = @models.EncoderDecoderModel()
models.EncoderDecoderModel:
  module = @network.Transformer()
  input_vocabulary = %VOCABULARY
  output_vocabulary = %VOCABULARY
  optimizer_def = %OPTIMIZER

network.Transformer.config = @network.T5Config()
network.T5Config:
  vocab_size = {vocab_size}
  dtype = 'bfloat16'
  emb_dim = 768
  num_heads = 12
  num_encoder_layers = 12
  num_decoder_layers = 12
  head_dim = 64
  mlp_dim = 2048
  mlp_activations = ('gelu', 'linear')
  dropout_rate = %DROPOUT_RATE
  logits_via_embedding = False
{extra}"""

SIZE_FILE = """\
# The small size, in the form of t5x/examples/t5/t5_1_1/small.gin.

include 't5x/examples/{example}/{family}/base.gin'  # vocabulary, optimizer and model

network.Transformer.config = @network.T5Config()
network.T5Config:
  emb_dim = 512
  num_heads = 6
  num_encoder_layers = 8
  num_decoder_layers = 8
  mlp_dim = 1024
"""

T5_1_1_BASE_FIELDS = dict(
    architecture="encoder_decoder", vocab_size=32128, dtype="bfloat16", emb_dim=768,
    num_heads=12, num_encoder_layers=12, num_decoder_layers=12, head_dim=64, mlp_dim=2048,
    mlp_activations=("gelu", "linear"), logits_via_embedding=False, relpos_per_layer=False)
T5_1_1_SMALL_FIELDS = dict(T5_1_1_BASE_FIELDS, emb_dim=512, num_heads=6, num_encoder_layers=8,
                           num_decoder_layers=8, mlp_dim=1024)


def checkout(root: pathlib.Path, example: str, family: str, vocabulary: str, vocab_size: int,
             extra: str = "") -> pathlib.Path:
  """base.gin and small.gin at their places in a t5x checkout under root; small.gin's path."""
  directory = root / "t5x" / "examples" / example / family
  directory.mkdir(parents=True)
  (directory / "base.gin").write_text(T5_BASE.format(
      example=example, vocabulary=vocabulary, vocab_size=vocab_size, extra=extra))
  (directory / "small.gin").write_text(SIZE_FILE.format(example=example, family=family))
  return directory / "small.gin"


def test_size_file_including_its_base_file(tmp_path: pathlib.Path) -> None:
  """t5_1_1/small.gin (also Flan-T5's): the include is found from inside the checkout;
  the size file's block overrides the base's; macros resolve; vocabulary from the gin."""
  small = checkout(tmp_path, "t5", "t5_1_1", "@seqio.SentencePieceVocabulary()", 32128)
  model = t5x_gin.read(small)
  assert model.network == "t5x.examples.t5.network.T5Config"
  assert model.fields == T5_1_1_SMALL_FIELDS
  assert model.vocabulary == {"type": "sentencepiece", "path": "gs://bucket/vocab/spm.model"}
  assert t5x_gin.read(small.parent / "base.gin").fields == T5_1_1_BASE_FIELDS
  config = load_config(small, ["ModelConfig.dtype = 'float32'"])
  assert t5x_gin.is_t5x_gin(small) and config.dtype == "float32"
  assert config.num_decoder_layers == 8 and not config.logits_via_embedding
  from invscale_jax.models.model import build  # pylint: disable=g-import-not-at-top
  assert build(config).num_params() == 76_961_152  # T5 v1.1 Small


def test_scalable_t5_and_byt5(tmp_path: pathlib.Path) -> None:
  """scalable_t5 has a position bias per layer (its scan settings only concern the
  checkpoint layout); ByT5 names seqio.ByteVocabulary."""
  scalable = checkout(tmp_path / "a", "scalable_t5", "t5_1_1", "@seqio.SentencePieceVocabulary()",
                      32128, extra="  scan_layers = True\n  remat_policy = 'minimal'\n")
  assert t5x_gin.read(scalable).fields == dict(T5_1_1_SMALL_FIELDS, relpos_per_layer=True)
  byt5 = checkout(tmp_path / "b", "t5", "byt5", "@seqio.ByteVocabulary()", 384)
  model = t5x_gin.read(byt5)
  assert model.vocabulary == {"type": "byte"} and model.fields["vocab_size"] == 384


def test_config_gin_of_a_model_dir(tmp_path: pathlib.Path) -> None:
  path = tmp_path / "config.gin"
  path.write_text(T5X_CONFIG_GIN)
  model = t5x_gin.read(path)
  assert model.network == "t5x.examples.decoder_only.network.TransformerConfig"
  assert model.fields == dict(
      architecture="decoder_only", vocab_size=384, dtype="bfloat16", emb_dim=32, num_heads=2,
      num_layers=2, head_dim=16, mlp_dim=64, mlp_activations=("gelu", "linear"),
      logits_via_embedding=True, relpos_per_layer=False)
  assert model.vocabulary == {"type": "byte"}


def test_unbound_fields_take_t5x_defaults(tmp_path: pathlib.Path) -> None:
  """T5X's dataclass defaults, not ours: relu MLP, untied logits, float32, 6 layers."""
  path = tmp_path / "model.gin"
  path.write_text("network.TransformerConfig.vocab_size = 512\n")  # no imports: legacy names
  assert t5x_gin.read(path).fields == dict(
      architecture="decoder_only", vocab_size=512, dtype="float32", emb_dim=512, num_heads=8,
      num_layers=6, head_dim=64, mlp_dim=2048, mlp_activations=("relu",),
      logits_via_embedding=False, relpos_per_layer=False)
  assert t5x_gin.read(path).vocabulary is None


def test_our_model_gin_files_are_not_t5x_files() -> None:
  from invscale_jax import family  # pylint: disable=g-import-not-at-top
  assert not t5x_gin.is_t5x_gin(family.GIN_DIR / "models" / "t5_1_1" / "small.gin")


@pytest.mark.parametrize("replace,new,line,message", [
    ("  logits_via_embedding = False\n", "  logits_via_embedding = False\n  num_experts = 8\n", 38,
     "network.T5Config.num_experts: cannot map to ModelConfig (no equivalent)"),
    ("  mlp_activations = ('gelu', 'linear')", "  mlp_activations = ('tanh',)", 35,
     "network.T5Config.mlp_activations: cannot map activation 'tanh'"),
    ("  emb_dim = 768", "  emb_dim = %EMB_DIM", 29,
     "network.T5Config.emb_dim: macro %EMB_DIM is not set"),
    ("  vocab_size = 32128", "  vocab_size = %VOCAB_SIZE", 10,
     "VOCAB_SIZE: is gin.REQUIRED: set it"),
    ("  dtype = 'bfloat16'", "  dtype = @jnp.bfloat16", 28,
     "network.T5Config.dtype: cannot map @jnp.bfloat16 to ModelConfig"),
    ("network.T5Config:\n", "encoder/network.T5Config.head_dim = 64\nnetwork.T5Config:\n", 26,
     "encoder/network.T5Config.head_dim: cannot map a scoped network binding to ModelConfig"),
    ("  input_vocabulary = %VOCABULARY", "  input_vocabulary = @seqio.ByteVocabulary()", 21,
     "models.EncoderDecoderModel.input_vocabulary: input and output vocabularies differ (one "
     "vocabulary is scored)"),
    ("seqio.SentencePieceVocabulary.sentencepiece_model_file",
     "seqio.SentencePieceVocabulary.normalizer_spec_overrides = None\n"
     "seqio.SentencePieceVocabulary.sentencepiece_model_file", 11,
     "seqio.SentencePieceVocabulary.normalizer_spec_overrides: cannot map this vocabulary "
     "option"),
])
def test_bindings_it_cannot_map_are_named(tmp_path, replace, new, line, message) -> None:
  base = T5_BASE.format(example="t5", vocabulary="@seqio.SentencePieceVocabulary()",
                        vocab_size=32128, extra="")
  if "VOCAB_SIZE" in new:
    base = base.replace("DROPOUT_RATE = %gin.REQUIRED", "DROPOUT_RATE = %gin.REQUIRED\n"
                        "VOCAB_SIZE = %gin.REQUIRED")
  assert replace in base
  path = tmp_path / "model.gin"
  path.write_text(base.replace(replace, new))
  with pytest.raises(t5x_gin.GinError) as raised:
    t5x_gin.read(path)
  assert str(raised.value).startswith(f"{path}:{line}: {message}")


@pytest.mark.parametrize("text,message", [
    ("from t5x.examples.decoder_only import network\nfrom t5x import models\n"
     "network.TransformerConfig.vocab_size = 384\n"
     "models.DecoderOnlyModel.inputs_bidirectional_attention = True\n",
     ":4: models.DecoderOnlyModel.inputs_bidirectional_attention: cannot map: a prefix LM"),
    ("include 't5x/examples/t5/t5_1_1/base.gin'\n",
     ":1: include 't5x/examples/t5/t5_1_1/base.gin': not found"),
    ("from t5x import utils\nutils.RestoreCheckpointConfig.dtype = 'float32'\n",
     ": binds no T5X network config"),
    ("network.T5Config.vocab_size = 32128\nnetwork.TransformerConfig.vocab_size = 384\n",
     ": binds several network configs: network.T5Config, network.TransformerConfig"),
    ("network.T5Config.emb_dim = 64\n", ": network.T5Config.vocab_size is not bound"),
    ("network.T5Config.emb_dim = (64\n", ":2: not a valid gin file: EOF in multi-line statement"),
])
def test_files_it_cannot_use_are_one_line_errors(tmp_path, text, message) -> None:
  path = tmp_path / "model.gin"
  path.write_text(textwrap.dedent(text))
  with pytest.raises(t5x_gin.GinError) as raised:
    t5x_gin.read(path)
  assert str(raised.value).startswith(f"{path}{message}") and "\n" not in str(raised.value)
