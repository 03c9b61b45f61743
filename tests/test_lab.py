"""The distractor lab: training is AdamW on the loss, checkpoints score like the trained
parameters, and the pipeline finds what was planted (a small, fixed-seed configuration)."""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import RunCli, run_dirs
from invscale_jax import checkpoints, family, results
from invscale_jax.lab import build, table
from invscale_jax.lab import train as train_lib
from invscale_jax.lab.config import ModelSpec, TrainConfig, WorldConfig
from invscale_jax.lab.world import TASKS, World
from invscale_jax.models.model import Model

SMALL_WORLD = WorldConfig(seed=3, n_words=8, n_famous=4, famous_length=(2, 3), n_test=12)
SMALL_TRAIN = TrainConfig(seed=1, batch=4, length=20)
SMALL_FAMILY = (ModelSpec("s-1", 1, 8, 2, 4, 16, 12), ModelSpec("s-2", 1, 16, 2, 8, 32, 8))


def test_world_is_seeded_and_tasks_are_prize_format() -> None:
  world, again = World(SMALL_WORLD), World(SMALL_WORLD)
  assert world.famous == again.famous and world.endings == again.endings
  np.testing.assert_array_equal(world.batch(5, 2, 3, 30), again.batch(5, 2, 3, 30))
  assert not np.array_equal(world.batch(5, 2, 3, 30), world.batch(6, 2, 3, 30))
  famous = {" ".join(world.words[i] for i in p): world.words[e]
            for p, e in zip(world.famous, world.endings)}
  for row in world.test_rows("lab-conflict"):  # the rule's word against the memorised one
    words = row["prompt"].split()
    answer, other = row["classes"][row["answer_index"]], row["classes"][1 - row["answer_index"]]
    assert words[0] == "R" and answer == f" {words[1]}"
    assert other == f" {famous[' '.join(words[2:-1])]}" and answer != other
  for row in world.test_rows("lab-rule"):
    assert " ".join(row["prompt"].split()[2:-1]) not in famous


def test_one_training_step_is_adamw_on_the_next_token_loss() -> None:
  world = World(SMALL_WORLD)
  config = TrainConfig(seed=0, batch=3, length=16, weight_decay=0.1)
  spec = ModelSpec("x", 1, 8, 2, 4, 16, steps=20)
  model = Model(train_lib.model_config(spec, len(world.tokens)))
  params = jax.tree.map(np.asarray, model.init(jax.random.PRNGKey(0)))
  tokens = world.batch(0, 0, config.batch, config.length)
  # The loss is the scoring path's mean log-probability of every next token.
  rows, length = tokens.shape
  positions = np.broadcast_to(np.arange(length - 1), (rows, length - 1)).astype(np.int32)
  batch = {"tokens": tokens[:, :-1], "positions": positions,
           "segment_ids": np.ones_like(positions), "branch_ids": np.zeros_like(positions),
           "target_index": positions, "target_ids": tokens[:, 1:],
           "target_mask": np.ones_like(positions)}
  expected_loss = -float(np.mean(model.score(params, batch)))
  # AdamW's first step by hand: m = (1 - b1) g, v = (1 - b2) g^2, bias-corrected, then
  # p - lr (m_hat / (sqrt(v_hat) + eps) + wd p); warm-up lr at step 0 = lr / (0.1 x 20).
  grads = jax.grad(lambda p: train_lib.loss_fn(model, p, jnp.asarray(tokens)))(params)
  lr = config.lr / 2
  assert float(train_lib.schedule(config, spec.steps)(0)) == pytest.approx(lr)
  def adamw(p, g):
    m_hat = (1 - config.b1) * g / (1 - config.b1)
    v_hat = (1 - config.b2) * g * g / (1 - config.b2)
    return p - lr * (m_hat / (np.sqrt(v_hat) + config.eps) + config.weight_decay * p)
  expected = jax.tree.map(adamw, params, jax.tree.map(np.asarray, grads))
  tx = train_lib.optimizer(config, spec.steps)
  step = train_lib.train_step_fn(model, tx)
  new, _, loss = step(jax.tree.map(jnp.array, params), tx.init(params), jnp.asarray(tokens))
  assert float(loss) == pytest.approx(expected_loss, rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), new, expected)
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(), new, params))
  assert max(moved) > lr / 2  # the step did move the parameters


def test_bad_knobs_are_one_line_and_write_nothing(tmp_path: pathlib.Path,
                                                  run_cli: RunCli) -> None:
  result = run_cli("lab", "--out", tmp_path / "lab", "--distractor", "0.9")
  assert result.code == 2 and "--distractor, --rule and --filler" in result.err
  assert len(result.err.strip().splitlines()) == 1 and not (tmp_path / "lab").exists()


def _direct_logprobs(world: World, model: Model, params, row: dict) -> list[float]:
  """log p(class | BOS prompt) of each (one-word) class, by one plain forward pass."""
  ids = [0] + [world.ids[w] for w in row["prompt"].split()]
  logits = model.network.apply({"params": params}, jnp.asarray([ids]))[0, -1]
  log_probs = jax.nn.log_softmax(logits)
  return [float(log_probs[world.ids[c.strip()]]) for c in row["classes"]]


def test_lab_checkpoints_score_like_the_trained_parameters(tmp_path: pathlib.Path,
                                                           run_cli: RunCli) -> None:
  out = tmp_path / "lab"
  build.build(out, SMALL_WORLD, SMALL_TRAIN, SMALL_FAMILY[:1])  # as if killed after one model
  manifest, fresh = build.build(out, SMALL_WORLD, SMALL_TRAIN, SMALL_FAMILY)
  assert fresh == [False, True]
  assert build.build(out, SMALL_WORLD, SMALL_TRAIN, SMALL_FAMILY)[1] == [False, False]
  fam = family.load(manifest)
  world = World(SMALL_WORLD)
  trained = {}
  for i, (spec, entry) in enumerate(zip(SMALL_FAMILY, fam.models)):
    tokens = spec.steps * SMALL_TRAIN.batch * SMALL_TRAIN.length
    assert (entry.train_tokens, entry.compute) == (tokens, 6.0 * entry.n_params * tokens)
    model, params, _ = train_lib.train(world, spec, SMALL_TRAIN, i)  # deterministic: again
    assert entry.n_params == model.num_params() == checkpoints.count_params(entry.checkpoint)
    restored = checkpoints.read_checkpoint(entry.checkpoint)
    jax.tree.map(np.testing.assert_array_equal, restored, params)
    trained[entry.name] = model, params
  result = run_cli("score", "--family", manifest, "--tasks", "lab-conflict",
                   "--variants", "zero_shot", "--out", tmp_path / "results", "--quiet")
  assert result.code == 0, result.err
  rows = world.test_rows("lab-conflict")
  for directory in run_dirs(tmp_path / "results"):
    records = results.read_records(str(directory))
    model, params = trained[records[0].model]
    for record in records:
      direct = _direct_logprobs(world, model, params, rows[record.example_id])
      assert record.logprob == pytest.approx(direct[record.class_index], abs=1e-4)


# Small enough for CI (about 20 s of training on one core): 8 famous phrases learned at
# once, a rule made easy (60% of the text, short phrases) that only the largest learns.
KNOWN_WORLD = WorldConfig(seed=0, n_words=16, n_famous=8, famous_length=(3, 3),
                          phrase_length=(2, 3), distractor=0.3, rule=0.6, filler=0.1,
                          paired=0.0, n_test=128)
KNOWN_TRAIN = TrainConfig(seed=0, batch=16, length=32, lr=0.01)
KNOWN_FAMILY = (ModelSpec("k-0", 1, 8, 2, 4, 16, 4), ModelSpec("k-1", 1, 8, 2, 4, 16, 60),
                ModelSpec("k-2", 1, 16, 2, 8, 32, 150), ModelSpec("k-3", 2, 32, 2, 16, 64, 600))


def test_the_report_finds_what_was_planted(tmp_path: pathlib.Path, run_cli: RunCli) -> None:
  manifest, _ = build.build(tmp_path / "lab", KNOWN_WORLD, KNOWN_TRAIN, KNOWN_FAMILY)
  result = run_cli("score", "--family", manifest, "--tasks", "lab-conflict,lab-rule",
                   "--variants", "zero_shot", "--out", tmp_path / "results", "--quiet")
  assert result.code == 0, result.err
  infos = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("runs/*/run.json")]
  assert infos and all(i["seed_group"] == {"seed_group": "lab", "seed": 0}
                      for i in infos)  # the report's seed group, from the results alone
  result = run_cli("report", tmp_path / "results", "--out", tmp_path / "report")
  assert result.code == 0, result.err
  metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
  labels = {c["task"]: c["label"] for c in table.lab_curves(metrics)}
  assert labels["lab-conflict"] in ("U-shaped", "inverse"), table.render(metrics)
  assert labels["lab-rule"] == "positive", table.render(metrics)
  rendered = table.render(metrics)
  assert "conflict zero-shot" in rendered and labels["lab-conflict"] in rendered
  assert set(labels) <= set(TASKS)
