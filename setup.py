"""invscale-jax: inverse-scaling evaluation of JAX checkpoints, T5X-style."""

import setuptools

setuptools.setup(
    name="invscale-jax",
    version="0.1.0",
    description="Does this behaviour get worse as models get bigger? Exact, fast, honest.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["invscale_jax", "invscale_jax.*",
                                               "seqio_tasks", "seqio_tasks.*"]),
    package_data={"invscale_jax": ["families/*.json"], "seqio_tasks": ["cot_exemplars/*.json"]},
    install_requires=[
        "jax>=0.10,<0.11",
        "flax",
        "optax",  # the distractor lab's training
        "seqio==0.0.20",
        "tensorflow>=2.21,<2.22",
        "tensorflow-text>=2.21,<2.22",
        "tensorflow-datasets",
        "importlib_resources",  # etils[epath], which tensorflow-datasets builders need
        "gin-config",
        "numpy",
        "tensorstore",
        "msgpack",
        "orbax-checkpoint",
        "ml_dtypes",
        "matplotlib",
        "sentencepiece",
        "tokenizers",
        "tqdm",
        "psutil",  # free host memory (engine/batch_sizer.py)
    ],
    extras_require={
        # The tests compare against transformers (tests/hf_tiny.py); the demo needs none of it.
        "test": ["pytest", "pytest-timeout", "gcp-storage-emulator", "torch", "transformers",
                 "safetensors"],
        "hf": ["torch", "transformers", "safetensors"],  # converters (invscale convert hf-*)
        "tpu": ["jax[tpu]>=0.10,<0.11"],
        "bench": ["lm-eval[hf]==0.4.13"],  # benchmarks/vs_lm_eval.py
    },
    entry_points={"console_scripts": ["invscale=invscale_jax.cli:run"]},
)
