"""Seeds of one design (`seed_group`): the report's mean over seeds and its min-max band,
from synthetic runs written through the results store (no training)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from invscale_jax import family as family_lib
from invscale_jax.lab import build
from invscale_jax.lab.config import ModelSpec, TrainConfig, WorldConfig
from invscale_jax.lab.world import World
from invscale_jax.report import analysis, commands
from invscale_jax.report.errors import ReportError
from test_report_end_to_end import class_records, write_run

MODELS = ("tiny-1", "tiny-2", "tiny-3")
ACCURACY = {0: (0.9, 0.7, 0.5), 1: (0.8, 0.75, 0.4), 2: (0.85, 0.6, 0.45)}  # seed -> models


def _seed_results(root: pathlib.Path, seeds=(0, 1, 2), skip=()) -> pathlib.Path:
  rng = np.random.default_rng(0)
  for seed in seeds:
    for model, p in zip(MODELS, ACCURACY[seed]):
      if (seed, model) in skip:
        continue
      write_run(root, model, "memo-trap", "zero_shot",
                class_records(model, "memo-trap", "zero_shot", p, rng, n=60),
                run_key=f"s{seed}.{model}", family=f"lab-seed{seed}",
                seed_group={"seed_group": "lab", "seed": seed})
  return root


def test_mean_and_band_over_three_seeds(tmp_path: pathlib.Path) -> None:
  results = _seed_results(tmp_path / "results")
  out = commands.make_report([str(results)], str(tmp_path / "r"),
                             options=analysis.Options(resamples=100))
  data = json.loads((out / "metrics.json").read_text())
  per_family = {(c["family"], p["model"]): p["value"] for c in data["curves"]
                if (c["task"], c["variant"], c["metric"]) == ("memo-trap", "zero_shot",
                                                             "accuracy") for p in c["points"]}
  (group,) = [s for s in data["seed_groups"] if (s["task"], s["metric"]) == ("memo-trap",
                                                                             "accuracy")]
  assert (group["group"], group["families"], group["seeds"], group["left_out"]) == (
      "lab", ["lab-seed0", "lab-seed1", "lab-seed2"], [0, 1, 2], [])
  assert [p["model"] for p in group["points"]] == list(MODELS)
  for p in group["points"]:
    values = np.array([per_family[(f"lab-seed{s}", p["model"])] for s in range(3)])
    assert p["n_seeds"] == 3
    assert p["mean"] == pytest.approx(values.mean(), abs=1e-12)
    assert (p["low"], p["high"]) == pytest.approx((values.min(), values.max()), abs=1e-12)
  assert len({p["mean"] for p in group["points"]}) == 3  # not one number everywhere
  summary = (out / "summary.md").read_text()
  assert "## Mean over training seeds (accuracy)" in summary
  first = group["points"][0]
  assert (f"| lab | memo-trap | zero_shot | tiny-1 | {first['compute']:.3g} | "
          f"{100 * first['mean']:.1f}% | \\[{100 * first['low']:.1f}%, "
          f"{100 * first['high']:.1f}%\\] | 3 |") in summary
  assert "Mean over training seeds" in (out / "report.html").read_text()
  assert "mean over 3 seeds (band: min-max)" in (out / "curves.svg").read_text()
  assert "| lab-seed1 | memo-trap |" in summary  # shapes stay per family


def test_a_model_missing_from_one_seed_is_left_out_and_said(tmp_path: pathlib.Path) -> None:
  results = _seed_results(tmp_path / "results", skip={(1, "tiny-3")})
  out = commands.make_report([str(results)], str(tmp_path / "r"),
                             options=analysis.Options(resamples=100))
  data = json.loads((out / "metrics.json").read_text())
  (group,) = [s for s in data["seed_groups"]
              if (s["task"], s["metric"]) == ("memo-trap", "accuracy")]
  assert [p["model"] for p in group["points"]] == ["tiny-1", "tiny-2"]
  assert group["left_out"] == ["tiny-3: not in lab-seed1"]
  assert "lab memo-trap zero_shot: left out tiny-3: not in lab-seed1" in (
      out / "summary.md").read_text()


def test_two_families_claiming_one_seed_fail_in_one_line(tmp_path: pathlib.Path) -> None:
  results = _seed_results(tmp_path / "results", seeds=(0, 1))
  rng = np.random.default_rng(1)
  write_run(results, "tiny-1", "memo-trap", "zero_shot",
            class_records("tiny-1", "memo-trap", "zero_shot", 0.5, rng, n=60),
            run_key="dup", family="lab-other", seed_group={"seed_group": "lab", "seed": 1})
  with pytest.raises(ReportError, match=r"^seed group 'lab': families 'lab-other' and "
                                        r"'lab-seed1' both say seed 1$"):
    commands.make_report([str(results)], str(tmp_path / "r"),
                         options=analysis.Options(resamples=100))
  assert not (tmp_path / "r").exists()


def test_lab_manifest_names_its_seed_group(tmp_path: pathlib.Path) -> None:
  spec = ModelSpec("lab-1", 1, 16, 2, 8, 32, 150)
  record = {"n_params": 1000, "train_tokens": 2000, "final_loss": 1.0}
  for world_seed, group in ((0, "lab"), (4, "lab-w4")):
    world = World(WorldConfig(seed=world_seed, n_words=8, n_famous=4, n_test=4))
    data = build.manifest(world, TrainConfig(seed=2), [spec], [record])
    path = tmp_path / f"w{world_seed}" / "manifest.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    fam = family_lib.load(path)
    assert (fam.name, fam.seed_group, fam.seed) == (f"{group}-seed2", group, 2)


@pytest.mark.parametrize("fields, error", [
    ({"seed_group": "lab"}, "seed_group and seed: give both or neither"),
    ({"seed_group": "lab", "seed": "1"}, "seed: must be an integer >= 0, got '1'"),
    ({"seed_group": "lab", "seed": True}, "seed: must be an integer >= 0, got True"),
    ({"seed_group": "", "seed": 1}, "seed_group: must be a non-empty string, got ''"),
])
def test_bad_seed_fields_are_one_line(tmp_path: pathlib.Path, fields, error) -> None:
  path = tmp_path / "manifest.json"
  path.write_text(json.dumps({"family": "f", "models": [{
      "name": "m", "architecture": "decoder_only", "gin": "m.gin", "checkpoint": "c",
      "vocabulary": {"type": "byte"}}], **fields}))
  with pytest.raises(family_lib.ManifestError) as e:
    family_lib.load(path)
  assert str(e.value) == f"{path}: {error}"


@pytest.mark.parametrize("value, error", [
    ("lab", "seed_group: must be an object with seed_group and seed, got 'lab'"),
    ({"seed_group": "lab", "seed": -1}, "seed_group: seed: must be an integer >= 0, got -1"),
])
def test_bad_seed_group_in_run_json_is_one_line(tmp_path: pathlib.Path, value, error) -> None:
  rng = np.random.default_rng(2)
  run_dir = write_run(tmp_path / "results", "tiny-1", "memo-trap", "zero_shot",
                      class_records("tiny-1", "memo-trap", "zero_shot", 0.5, rng, n=10),
                      seed_group=value)
  with pytest.raises(ReportError) as e:
    commands.make_report([str(tmp_path / "results")], str(tmp_path / "r"),
                         options=analysis.Options(resamples=100))
  assert str(e.value) == f"{run_dir / 'run.json'}: {error}"
