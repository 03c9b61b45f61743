"""T5X checkpoints without t5x: legacy msgpack + zarr (format version 3), and Orbax.

  write_checkpoint(model_dir, params, step=0, dtype=jnp.bfloat16, format="legacy"|"orbax")
  params = read_checkpoint(model_dir, dtype=jnp.float32, expected=shapes, shardings=shardings)
  n = count_params(model_dir)

Parameter trees are nested dicts with T5X names, without the `target` prefix.
"""

from invscale_jax.checkpoint_errors import CheckpointError
from invscale_jax.checkpoints.restore import count_params, read_checkpoint
from invscale_jax.checkpoints.write import FORMATS, write_checkpoint

__all__ = ["CheckpointError", "FORMATS", "count_params", "read_checkpoint", "write_checkpoint"]
