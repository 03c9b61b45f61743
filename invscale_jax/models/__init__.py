"""Flax networks with T5X parameter names, behind one `Model` interface (`model.py`).

The package imports nothing itself: model configs (`config.py`: `ModelConfig`,
`load_config`, `to_gin`) and T5X model directories (`t5x_dir.py`, `t5x_gin.py`) load
without JAX or Flax, so commands that only read configs (planning a run, `family show`)
start fast; the networks (`model.py`, `decoding.py`) import JAX and Flax.
"""
