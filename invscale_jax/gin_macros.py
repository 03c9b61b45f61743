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
