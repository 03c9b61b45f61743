"""The TFDS dataset `inverse_scaling_prize` (see inverse_scaling_prize_dataset_builder.py)."""

from invscale_jax.data.inverse_scaling_prize.inverse_scaling_prize_dataset_builder import (
    NAME, SPLIT, VERSION, Builder, InverseScalingPrize, example, features, row)

__all__ = ["NAME", "SPLIT", "VERSION", "Builder", "InverseScalingPrize", "example", "features",
           "row"]
