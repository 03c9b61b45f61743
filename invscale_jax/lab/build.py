"""Writing a lab directory: the world's tasks and vocabulary, then the family, model by model.

  DIR/vocab/tokenizer.json                 word-level `tokenizers` vocabulary
  DIR/tasks/lab-*.task.json, lab-*.jsonl   the test tasks as your-own tasks
  DIR/gin/<model>.gin                      each model's config
  DIR/models/<model>/checkpoint_<steps>/   T5X checkpoint (legacy layout)
  DIR/models/<model>/lab.json              what it was trained from (`key`), N, D, loss
  DIR/manifest.json                        the family: measured N, D and C = 6ND

A model is trained in a temporary directory and renamed into place when done, so a killed
run resumes model by model; a model whose `key` (world, training settings and model
shape) matches is kept, whatever else is re-run.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import time
from typing import Callable, Sequence

from invscale_jax import checkpoints
from invscale_jax.lab import train as train_lib
from invscale_jax.lab.config import ModelSpec, TrainConfig, WorldConfig
from invscale_jax.lab.world import TASKS, World
from invscale_jax.models import config as config_lib

# The default family: 1 layer x width 16 up to 2 layers x width 80 (about 3k to 131k
# parameters), each trained longer than the one before.
FAMILY = (
    ModelSpec("lab-1", 1, 16, 2, 8, 32, 150),
    ModelSpec("lab-2", 1, 24, 2, 12, 48, 250),
    ModelSpec("lab-3", 2, 32, 2, 16, 64, 400),
    ModelSpec("lab-4", 2, 48, 4, 12, 96, 500),
    ModelSpec("lab-5", 2, 64, 4, 16, 128, 700),
    ModelSpec("lab-6", 2, 80, 4, 20, 160, 800),
)
DESCRIPTIONS = {
    "lab-conflict": "The rule (end the phrase with the word after R) against a famous "
                    "phrase's memorised ending; the answer is the rule's. Chance 0.5.",
    "lab-rule": "The rule on phrases that are not famous (the true task alone).",
    "lab-memo": "Famous phrases and their memorised endings (the distractor alone).",
}
VOCAB = "vocab/tokenizer.json"


def _key(world: WorldConfig, train: TrainConfig, spec: ModelSpec) -> str:
  text = json.dumps({"world": world.to_dict(), "train": train.to_dict(),
                     "model": spec.__dict__, "format": 1}, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()


def _write_atomic(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


def write_tasks(world: World, out: pathlib.Path) -> None:
  """The three test tasks (declarations and prize-format JSONL) and the vocabulary."""
  _write_atomic(out / VOCAB, world.tokenizer_json())
  for task in TASKS:
    rows = world.test_rows(task)
    _write_atomic(out / "tasks" / f"{task}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    declaration = {"name": task, "type": "classification", "metric": "accuracy",
                   "file": f"{task}.jsonl", "description": DESCRIPTIONS[task]}
    _write_atomic(out / "tasks" / f"{task}.task.json", json.dumps(declaration, indent=1) + "\n")


def trained(model_dir: pathlib.Path, key: str) -> dict | None:
  """The model's record if it was trained from `key` and its checkpoint is there."""
  try:
    record = json.loads((model_dir / "lab.json").read_text())
  except (OSError, ValueError):
    return None
  checkpoint = model_dir / f"checkpoint_{record.get('steps')}"
  return record if record.get("key") == key and checkpoint.is_dir() else None


def train_model(world: World, train: TrainConfig, spec: ModelSpec, index: int,
                model_dir: pathlib.Path, on_step: Callable[[int, float], None]) -> dict:
  """Trains one model and writes its checkpoint and record (atomically); returns the record."""
  start = time.time()
  model, params, loss = train_lib.train(world, spec, train, index, on_step)
  model_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.", dir=model_dir.parent))
  try:
    checkpoints.write_checkpoint(tmp, params, step=spec.steps, dtype="float32")
    record = {"key": _key(world.config, train, spec), "steps": spec.steps,
              "n_params": model.num_params(),
              "train_tokens": spec.steps * train.batch * train.length,
              "final_loss": round(loss, 4), "train_seconds": round(time.time() - start, 1)}
    (tmp / "lab.json").write_text(json.dumps(record, indent=1) + "\n")
    if model_dir.exists():
      shutil.rmtree(model_dir)
    os.replace(tmp, model_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return record


def manifest(world: World, train: TrainConfig, specs: Sequence[ModelSpec],
             records: Sequence[dict]) -> dict:
  models = []
  for spec, record in zip(specs, records):
    n, d = record["n_params"], record["train_tokens"]
    models.append({"name": spec.name, "architecture": "decoder_only",
                   "gin": f"gin/{spec.name}.gin",
                   "checkpoint": f"models/{spec.name}/checkpoint_{spec.steps}",
                   "vocabulary": {"type": "hf_tokenizer", "path": VOCAB}, "bos_id": 0,
                   "n_params": n, "train_tokens": d, "train_flops": 6.0 * n * d,
                   "trained": True, "final_loss": record["final_loss"]})
  w = world.config
  group = "lab" if w.seed == 0 else f"lab-w{w.seed}"
  return {"family": f"{group}-seed{train.seed}", "seed_group": group, "seed": train.seed,
          "description": f"Distractor lab (invscale lab): world seed {w.seed}, training "
                         f"seed {train.seed}; T5X decoder_only models trained on the "
                         f"world's text. C = 6ND with N and D measured.",
          "task_dirs": ["tasks"],
          "lab": {"world": w.to_dict(), "train": train.to_dict()},
          "models": models}


def build(out: os.PathLike | str, world_config: WorldConfig, train: TrainConfig,
          specs: Sequence[ModelSpec] = FAMILY,
          progress: Callable[[str, int], Callable[[int, float], None]] | None = None
          ) -> tuple[pathlib.Path, list[bool]]:
  """Writes (or completes) the lab directory `out`; returns the manifest path and, per
  model, whether it was trained now (False: kept from an earlier run).
  `progress(model name, steps)` returns the per-step callback of one model's training."""
  out = pathlib.Path(out)
  world = World(world_config)
  write_tasks(world, out)
  records, fresh = [], []
  for index, spec in enumerate(specs):
    cfg = train_lib.model_config(spec, len(world.tokens))
    _write_atomic(out / "gin" / f"{spec.name}.gin", config_lib.to_gin(
        cfg, f"{spec.name}: distractor lab model, {spec.steps} steps"))
    model_dir = out / "models" / spec.name
    record = trained(model_dir, _key(world_config, train, spec))
    fresh.append(record is None)
    if record is None:
      on_step = progress(spec.name, spec.steps) if progress else (lambda step, loss: None)
      record = train_model(world, train, spec, index, model_dir, on_step)
    records.append(record)
  path = out / "manifest.json"
  _write_atomic(path, json.dumps(manifest(world, train, specs, records), indent=1) + "\n")
  return path, fresh
