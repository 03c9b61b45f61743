"""Settings of the SeqIO tasks read from gin macros when a dataset is built.

The task module (`seqio_tasks`) registers no gin configurables, so it can be imported at
any time: before gin is parsed, inside a gin file (`import seqio_tasks`), or after gin is
finalized and locked, as T5X does with `MIXTURE_OR_TASK_MODULE`. Its settings are gin
macros instead, which need no registration and work with and without
`from __gin__ import dynamic_registration`::

  INVSCALE_DATA_DIR = '/data/inverse_scaling'
  INVSCALE_VOCABULARY = 'gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model'
  INVSCALE_SEED = 0                  # few-shot sampling
  INVSCALE_MAX_LENGTH = 2048         # prompt budget in tokens (None: no cap)
  INVSCALE_GENERATION_LENGTH = 128   # room kept for chain-of-thought generation
  INVSCALE_TASK_DIRS = ['/data/my_tasks']  # directories of your own task declarations
  INVSCALE_ENCODER_EOS = True        # EOS after the encoder input (default: `encoder_eos`)
  INVSCALE_DATA_SOURCE = 'tfds'      # examples from TFDS, not the files (`data.sources`)
  INVSCALE_TFDS_DATA_DIR = 'gs://bucket/tensorflow_datasets'

or, on a T5X command line, `--gin.INVSCALE_DATA_DIR="'/data/inverse_scaling'"`.
"""

from __future__ import annotations

from typing import Any

import gin

DATA_DIR = "INVSCALE_DATA_DIR"
VOCABULARY = "INVSCALE_VOCABULARY"
SEED = "INVSCALE_SEED"
MAX_LENGTH = "INVSCALE_MAX_LENGTH"
GENERATION_LENGTH = "INVSCALE_GENERATION_LENGTH"
TASK_DIRS = "INVSCALE_TASK_DIRS"
ENCODER_EOS = "INVSCALE_ENCODER_EOS"
DATA_SOURCE = "INVSCALE_DATA_SOURCE"
TFDS_DATA_DIR = "INVSCALE_TFDS_DATA_DIR"


def value(name: str, default: Any = None) -> Any:
  """The value bound to gin macro `name`, or `default` when it is not bound.

  A macro bound to another macro or to a configurable call (`@f()`) is evaluated, as T5X
  evaluates its own macros.
  """
  try:
    bound = gin.query_parameter(f"%{name}")
  except ValueError:  # gin's answer for a macro that is not bound
    return default
  except NameError:  # asked while a gin file with dynamic registration is parsed (its
    return default  # `import seqio_tasks`): nothing can be queried then; bound later
  if isinstance(bound, gin.config.ConfigurableReference):
    return bound.scoped_configurable_fn() if bound.evaluate else bound.scoped_configurable_fn
  return bound


def encoder_eos() -> bool:
  """Whether the tasks end their `inputs` with EOS: INVSCALE_ENCODER_EOS if bound, else
  whether T5X's MODEL macro (bound by every T5X model gin file) is an encoder-decoder
  model, as T5's own SeqIO tasks add EOS to the encoder input and decoder-only ones none."""
  explicit = value(ENCODER_EOS)
  if explicit is not None:
    return bool(explicit)
  try:
    model = gin.query_parameter("%MODEL")
  except ValueError:
    return False
  return (isinstance(model, gin.config.ConfigurableReference)
          and model.configurable.name.endswith("EncoderDecoderModel"))
