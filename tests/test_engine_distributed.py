"""Scale-out, end to end with the real CLI, real T5X checkpoints and real task rows.

Records do not depend on the mesh (8 devices, parameters sharded over `model`), on the
number of hosts (2 processes joined by jax.distributed, only process 0 writing, resume
decided by process 0), nor on batch size or packing.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import socket
import sys
import time

import jax
import numpy as np
import pytest

from conftest import (N_RUNS, SCORE_ARGS, CliResult, Job, ScoreCli, assert_finished,
                      assert_same_records, chunk_states, find_run, read_results, select)
from invscale_jax import catalog
from invscale_jax import family as family_lib
from invscale_jax.data import task_rows, variants
from invscale_jax.engine import loading, packing, partitioning, reference
from invscale_jax.engine.requests import Request, from_task_rows
from invscale_jax.engine.scorer import Scorer
from invscale_jax.models.model import build

# float32 scores computed with other shapes (shards, batches, packing) differ by summation
from invscale_jax.models.config import load_config

# float32 scores computed with other shapes (shards, batches, packing) differ by summation
# order only; a wrong mask or position would be off by ~1e-1.
ATOL = 1e-5

# ---------------------------------------------------------------------------- sharded mesh

MODEL_PARALLEL = ("--model_parallel", "2")
# `python -c SHARDED NAME ARGV...` runs `invscale ARGV...` after printing, as a JSON line,
# how the mesh of ARGV's --model_parallel shards the parameters of model NAME and a batch.
SHARDED = """
import json, sys
import jax, numpy as np
from invscale_jax import cli, family
from invscale_jax.engine import loading, partitioning
name, argv = sys.argv[1], sys.argv[2:]
flag = lambda f: argv[argv.index(f) + 1]
mesh = partitioning.make_mesh(int(flag("--model_parallel")))
loaded = loading.load_model(family.load(flag("--family")).get(name), "float32", mesh)
def describe(x):
  return {"spec": [None if a is None else str(a) for a in x.sharding.spec],
          "shape": list(x.shape), "devices": len(x.sharding.device_set),
          "shards": len({str(s.index) for s in x.addressable_shards}),
          "shard_shapes": sorted({tuple(s.data.shape) for s in x.addressable_shards})}
params = {jax.tree_util.keystr(p): describe(x)
          for p, x in jax.tree_util.tree_leaves_with_path(loaded.params)}
batch = partitioning.to_global(np.zeros((8, 32), np.int32), partitioning.batch_sharding(mesh))
print("SHARDING", json.dumps({"mesh": dict(mesh.shape), "params": params,
                              "batch": describe(batch)}), flush=True)
sys.exit(cli.main(argv))
"""


def trimmed(spec: list) -> list:
  """A partition spec without trailing Nones (replicated trailing dims)."""
  spec = list(spec)
  while spec and spec[-1] is None:
    spec.pop()
  return spec


def assert_sharded_by_rules(sharding: dict, gin_file: str) -> None:
  """A (4 data, 2 model) mesh; parameters split in 2 over `model` along the dims whose
  logical axis the rules map there, replicated otherwise; batches split over `data`."""
  assert sharding["mesh"] == {"data": 4, "model": 2}
  rules = dict(partitioning.LOGICAL_AXIS_RULES)
  axes = build(load_config(gin_file)).param_axes()
  expected = {jax.tree_util.keystr(p): [rules[a] for a in names] for p, names in
              jax.tree_util.tree_leaves_with_path(axes, is_leaf=lambda x: isinstance(x, tuple))}
  assert sharding["params"].keys() == expected.keys()
  n_split = 0
  for name, want in expected.items():
    got = sharding["params"][name]
    assert trimmed(got["spec"]) == trimmed(want), name
    assert got["devices"] == 8, name
    split = [i for i, a in enumerate(want) if a == partitioning.MODEL]
    assert got["shards"] == (2 if split else 1), name
    assert got["shard_shapes"] == [[n // 2 if i in split else n
                                     for i, n in enumerate(got["shape"])]], name
    n_split += bool(split)
  # The embedding, the relative position bias, and per layer q, k, v, out, wi_0, wi_1, wo.
  assert n_split == 2 + 7 * 2
  assert sharding["batch"]["spec"] == ["data"]
  assert sharding["batch"]["shards"] == 4 and sharding["batch"]["shard_shapes"] == [[2, 32]]


def test_sharded_mesh_gives_the_single_device_records(
    score_cli: ScoreCli, reference_results: pathlib.Path, tmp_path: pathlib.Path) -> None:
  """`invscale score` on 8 devices as (4 data, 2 model), tiny-2's loaded parameters
  checked to be sharded, equals the single-device run."""
  out = tmp_path / "results"
  argv = score_cli.argv(out, *SCORE_ARGS, *MODEL_PARALLEL)
  result = Job([sys.executable, "-c", SHARDED, "tiny-2", *argv], score_cli.env(devices=8),
               tmp_path / "sharded.log").finish(300)
  assert result.code == 0, result.out
  line = next(l for l in result.out.splitlines() if l.startswith("SHARDING "))
  assert_sharded_by_rules(json.loads(line.split(" ", 1)[1]),
                          family_lib.load(score_cli.family).get("tiny-2").gin)
  assert_finished(out, N_RUNS)
  assert_same_records(read_results(out), read_results(reference_results), ATOL)


# ---------------------------------------------------------------------------- multi-host

MULTI_HOST_ARGS = ("--tasks", "memo-trap,neqa", "--variants", "zero_shot", "--chunk_size", "8",
                   "--tokens_per_batch", "1024")
HOSTS_TIMEOUT = 180


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_hosts(score_cli: ScoreCli, outs: list[pathlib.Path], *args: str) -> list[CliResult]:
  """The same command as 2 processes of one jax.distributed job (2 CPU devices each) on
  127.0.0.1, writing to outs[i]; both are killed if not done within HOSTS_TIMEOUT."""
  port = free_port()
  jobs = [score_cli.start(out, *args, devices=2, INVSCALE_COORDINATOR=f"127.0.0.1:{port}",
                          INVSCALE_NUM_PROCESSES=str(len(outs)), INVSCALE_PROCESS_ID=str(i))
          for i, out in enumerate(outs)]
  deadline = time.monotonic() + HOSTS_TIMEOUT
  return [job.finish(max(1.0, deadline - time.monotonic())) for job in jobs]


def assert_hosts_ok(results: list[CliResult]) -> None:
  for i, result in enumerate(results):
    assert result.code == 0, f"process {i} (exit {result.code}):\n{result.err[-6000:]}"


def test_two_hosts_give_the_single_process_records_written_once(
    score_cli: ScoreCli, reference_results: pathlib.Path, tmp_path: pathlib.Path) -> None:
  out = tmp_path / "results"
  assert_hosts_ok(run_hosts(score_cli, [out, out], "--model", "tiny-1", *MULTI_HOST_ARGS))
  assert_finished(out, 2)
  assert len(list(out.glob("runs/*/chunk-*.jsonl"))) == 3 + 2  # 24 and 16 examples by 8
  expected = select(read_results(reference_results), ("tiny-1",), variants=("zero_shot",))
  assert_same_records(read_results(out), expected, ATOL)


def test_two_hosts_resume_as_process_0_decides(
    score_cli: ScoreCli, reference_results: pathlib.Path, tmp_path: pathlib.Path) -> None:
  """Process 0's results dir holds tiny-2's runs complete, tiny-1's memo-trap complete and
  1 chunk of its neqa; process 1's is empty (no shared file system)."""
  out0, out1 = tmp_path / "host0", tmp_path / "host1"
  out1.mkdir()
  for model, task in [("tiny-1", "memo-trap"), ("tiny-2", "memo-trap"), ("tiny-2", "neqa")]:
    src = find_run(reference_results, model, task, "zero_shot")
    shutil.copytree(src, out0 / "runs" / src.name)
  src = find_run(reference_results, "tiny-1", "neqa", "zero_shot")
  (out0 / "runs" / src.name).mkdir()
  for name in ("run.json", "chunk-000000.jsonl"):
    shutil.copy2(src / name, out0 / "runs" / src.name / name)
  kept = chunk_states(out0)

  assert_hosts_ok(run_hosts(score_cli, [out0, out1], *MULTI_HOST_ARGS))
  assert_finished(out0, 4)
  now = chunk_states(out0)
  assert {p: now[p] for p in kept} == kept  # finished chunks kept
  expected = select(read_results(reference_results), variants=("zero_shot",))
  assert_same_records(read_results(out0), expected, ATOL)
  assert list(out1.iterdir()) == []  # process 1 wrote nothing


# ---------------------------------------------------------------------------- batching

TOKENS_PER_BATCH = (256, 2048, 16384)
# hindsight-neglect prompts (~3000 bytes) cut to 600 tokens leave ~420 free in their
# 1024-token rows: packing puts short memo-trap requests there.
MAX_LENGTH = 600
N_LONG, N_SHORT = 20, 8


@pytest.fixture(scope="module")
def tiny_model(tiny_family: pathlib.Path) -> loading.LoadedModel:
  entry = family_lib.load(tiny_family).get("tiny-1")
  return loading.load_model(entry, "float32", partitioning.make_mesh(1))


@pytest.fixture(scope="module")
def long_and_short_requests(tiny_model: loading.LoadedModel,
                            small_data_dir: pathlib.Path) -> list[Request]:
  """N_LONG hindsight-neglect examples (long prompts, cut to MAX_LENGTH), then N_SHORT
  memo-trap ones."""
  def first(task: str, n: int) -> list[Request]:
    rows = task_rows.rows_for(catalog.get(task), variants.parse("zero_shot"),
                              tiny_model.vocabulary, task_rows.PromptOptions(0, MAX_LENGTH, 0),
                              str(small_data_dir))
    return from_task_rows(rows, tiny_model.vocabulary, "separate", MAX_LENGTH, limit=n)
  requests = first("hindsight-neglect", N_LONG) + first("memo-trap", N_SHORT)
  assert sum(r.n_truncated > 0 for r in requests) == N_LONG  # really long prompts
  return requests


@pytest.fixture(scope="module")
def brute_force(tiny_model: loading.LoadedModel,
                long_and_short_requests: list[Request]) -> list[list[np.ndarray]]:
  """One row per class, nothing shared or packed. The long rows at their exact length; the
  short ones right-padded to one length (else each distinct length costs a compilation)."""
  model, params = tiny_model.model, tiny_model.params
  long, short = long_and_short_requests[:N_LONG], long_and_short_requests[N_LONG:]
  return reference.score(model, params, long) + reference.score(model, params, short, 256)


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("tokens_per_batch", TOKENS_PER_BATCH)
def test_scores_do_not_depend_on_batch_size_or_packing(
    tokens_per_batch: int, pack: bool, tiny_model: loading.LoadedModel,
    long_and_short_requests: list[Request], brute_force: list[list[np.ndarray]]) -> None:
  requests = long_and_short_requests
  batches = list(packing.make_batches(requests, "decoder_only", tokens_per_batch, pack=pack))
  packed_rows = max(int(b.arrays["segment_ids"].max()) for b in batches)
  assert (packed_rows > 1) == pack  # the short memo-trap requests share rows when packing
  scorer = Scorer(tiny_model.model, tiny_model.params, tiny_model.mesh, tokens_per_batch, pack)
  got = scorer.score(requests)
  for r, have, want in zip(requests, got, brute_force):
    assert len(have) == len(want) == len(r.branches)
    for h, w, b in zip(have, want, r.branches):
      assert h.shape == w.shape == (len(b.target),)
      np.testing.assert_allclose(h, w, rtol=0, atol=ATOL)
      assert abs(float(h.sum()) - float(w.sum())) <= ATOL
