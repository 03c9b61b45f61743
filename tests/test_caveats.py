"""Numbers that say what they are: `--limit` subsets, truncated prompts, dtype and BOS in
`invscale results`, INDEX.md and the report; curves without signal get no shape; example
sets and checkpoints are never mixed silently; labels and degenerate curves leave the data
readable."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from conftest import SMALL_ROWS, RunCli
from invscale_jax import catalog, caveats, family, overview, records
from invscale_jax.report import analysis, commands, intervals, load, metrics, plots, shapes
from invscale_jax.report.errors import ReportError
from test_report_end_to_end import class_records, write_run

OPTIONS = analysis.Options(resamples=200)
MODELS = ("tiny-1", "tiny-2", "tiny-3")


def limited(n: int = 20, n_task: int = 300, **more) -> dict:
  """run.json fields of a `--limit n` run that truncated prompts, in bfloat16, no BOS."""
  return dict(options={"limit": n, "dtype": "bfloat16"}, n_task_examples=n_task,
              n_truncated=2, n_demos_dropped=3, max_length=512, bos_id=None, **more)


# ---------------------------------------------------------------------------- results table


def test_results_table_and_index_carry_interval_setup_and_caveats(tmp_path, run_cli: RunCli):
  out = tmp_path / "results"
  rng = np.random.default_rng(0)
  recs = class_records("tiny-1", "neqa", "zero_shot", 0.7, rng, n=20)
  write_run(out, "tiny-1", "neqa", "zero_shot", recs, trained=False,
            **limited())
  # Official data and no n_task_examples (older runs): the release's row count.
  write_run(out, "tiny-2", "neqa", "zero_shot", class_records("tiny-2", "neqa", "zero_shot",
                                                               0.5, rng, n=20),
            options={"limit": 20, "dtype": "float32"}, bos_id=0,
            data_sha256=catalog.get("neqa").sha256)
  shown = run_cli("results", out)
  assert shown.code == 0, shown.err
  header, *rows = shown.out.splitlines()[1:]
  assert header.split() == ["model", "task.variant", "status", "examples", "result",
                            "95%-interval", "unparseable", "setup", "caveats", "records"]
  line = {l.model: l for l in overview.lines(str(out))}["tiny-1"]
  low, high = intervals.mean_interval(metrics.example_metrics(recs).values["accuracy"])
  assert line.interval == pytest.approx((low, high))
  one = next(r for r in rows if r.startswith("tiny-1"))
  assert f"acc {100 * line.value:.1f}%  {100 * low:.1f}-{100 * high:.1f}%" in one
  assert "bf16, no BOS" in one
  assert "subset 20/300; 2 truncated; 3 demos dropped; untrained" in one
  two = next(r for r in rows if r.startswith("tiny-2"))
  assert "fp32, BOS 0" in two and "subset 20/300" in two and "untrained" not in two
  index = (out / overview.INDEX).read_text()
  assert "| bf16, no BOS | subset 20/300; 2 truncated; 3 demos dropped; untrained |" in index


def test_wilson_interval_is_not_empty_at_the_ends():
  low, high = intervals.mean_interval(np.zeros(20))
  assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)
  low, high = intervals.mean_interval(np.array([1.0] * 14 + [0.0] * 6))
  assert (low, high) == pytest.approx((0.4810, 0.8545), abs=1e-4)
  low, high = intervals.mean_interval(np.array([1.0, 2.0, 3.0]))  # a loss: mean +/- 1.96 SE
  assert (low, high) == pytest.approx((2 - 1.96 / 3 ** 0.5, 2 + 1.96 / 3 ** 0.5), abs=1e-3)


# ---------------------------------------------------------------------------- the report


def _report(results: pathlib.Path, out: pathlib.Path):
  report = commands.make_report([str(results)], str(out), options=OPTIONS)
  return (json.loads((report / "metrics.json").read_text()), (report / "summary.md").read_text(),
          (report / "report.html").read_text())


def _curve(data, task, variant, metric="accuracy"):
  return next(c for c in data["curves"]
              if (c["task"], c["variant"], c["metric"]) == (task, variant, metric))


def test_a_limit_run_and_full_runs_are_compared_on_the_same_examples(tmp_path):
  """H2: tiny-1 on its first 20 examples, the others on all 300: every point uses the 20."""
  rng = np.random.default_rng(1)
  full = {}
  for i, m in enumerate(MODELS):
    recs = class_records(m, "neqa", "zero_shot", 0.9 - 0.2 * i, rng, n=20 if i == 0 else 300)
    full[m] = recs
    write_run(tmp_path / "results", m, "neqa", "zero_shot", recs,
              **(limited() if i == 0 else {}))
  data, summary, html = _report(tmp_path / "results", tmp_path / "report")
  curve = _curve(data, "neqa", "zero_shot")
  for p in curve["points"]:
    first20 = metrics.example_metrics([r for r in full[p["model"]] if r.example_id < 20])
    assert p["n_examples"] == 20
    assert p["value"] == pytest.approx(first20.values["accuracy"].mean())
    assert p["marked"]  # every point is on a subset
  assert any("uses the 20 examples all models were scored on" in n for n in curve["notes"])
  assert any(n.startswith("a subset: 20 of 300 examples (--limit 20)") for n in curve["notes"])
  run = next(r for r in data["runs"] if r["model"] == "tiny-1")
  assert run["setup"] == "bf16, no BOS" and run["caveats"]["n_truncated"] == 2
  caveats = summary.split("## Caveats")[1].split("\n## ")[0]
  assert "a subset: 20 of 300 examples (--limit 20); 2 prompts truncated to fit 512 tokens; " \
         "3 demonstrations dropped to fit 512 tokens" in caveats
  assert "<h2>Caveats</h2>" in html and "Values per model (accuracy)" in html


def _generations(model, variant, n, parsed):
  return [records.Record(run_key="", model=model, task="neqa", variant=variant, example_id=i,
                         kind=records.GENERATION, class_index=0 if parsed else None,
                         n_classes=2, answer_index=i % 2, logprob=None, n_tokens=4, n_bytes=4,
                         is_correct=parsed and i % 2 == 0, generation="?", parsed=parsed)
          for i in range(n)]


def _one_class(model, task, variant, n=40):
  """Every example answered with class 0, whatever its answer."""
  return [dataclasses.replace(r, logprob=-1.0 if r.class_index == 0 else -2.0)
          for r in class_records(model, task, variant, 0.5, np.random.default_rng(2), n=n)]


@pytest.fixture(scope="module")
def degenerate(tmp_path_factory):
  """neqa: zero-shot with a signal, CoT 100% unparseable; memo-trap: every model answers
  class 0; modus-tollens: untrained models."""
  root = tmp_path_factory.mktemp("degenerate")
  rng = np.random.default_rng(3)
  for i, m in enumerate(MODELS):
    write_run(root, m, "neqa", "zero_shot",
              class_records(m, "neqa", "zero_shot", (0.55, 0.7, 0.9)[i], rng, n=100))
    write_run(root, m, "neqa", "cot_1_shot", _generations(m, "cot_1_shot", 100, parsed=False))
    write_run(root, m, "memo-trap", "zero_shot", _one_class(m, "memo-trap", "zero_shot"))
    write_run(root, m, "modus-tollens", "zero_shot",
              class_records(m, "modus-tollens", "zero_shot", (0.9, 0.5, 0.2)[i], rng, n=100),
              trained=False)
  data, summary, _ = _report(root, tmp_path_factory.mktemp("out") / "report")
  return root, data, summary


def test_curves_without_signal_get_a_reason_not_a_shape(degenerate):
  _, data, summary = degenerate
  cot = _curve(data, "neqa", "cot_1_shot")
  assert (cot["label"], cot["reason"]) == (shapes.NO_SIGNAL, "no signal: 100% unparseable")
  memo = _curve(data, "memo-trap", "zero_shot")
  assert (memo["label"], memo["reason"]) == (shapes.NO_SIGNAL,
                                             "no signal: gives class 0 to every example")
  assert _curve(data, "memo-trap", "zero_shot", "loss")["label"] != shapes.NO_SIGNAL
  for metric in ("accuracy", "loss"):  # untrained: no signal in any metric
    assert _curve(data, "modus-tollens", "zero_shot", metric)["reason"] == (
        "no signal: untrained (trained: false)")
  assert _curve(data, "neqa", "zero_shot")["label"] == shapes.POSITIVE
  changes = summary.split("## Does the prompt variant change the shape?")[1].split("\n## ")[0]
  assert not [l for l in changes.splitlines() if l.startswith("| tiny") and "cot_1_shot" in l]
  assert "Curves with no signal are left out" in changes
  assert "- tiny neqa cot_1_shot (cot_1_shot: no signal: 100% unparseable)" in changes
  assert "no signal" in shapes.rule_markdown(1000, 0.05, 0.02)


def test_plot_labels_cover_no_data_and_no_signal_does_not_squeeze(degenerate):
  root = degenerate[0]
  a = analysis.analyse(load.load_runs([str(root)]), options=OPTIONS)
  fig = plots.figure(a, "accuracy")
  renderer = FigureCanvasAgg(fig).get_renderer()
  fig.canvas.draw()
  for ax in fig.axes:
    labels = [t for t in ax.texts if t.get_text()]
    assert labels, ax.get_title()
    box = ax.get_window_extent(renderer)
    for t in labels:
      assert not t.get_window_extent(renderer).overlaps(box), t.get_text()
  neqa = next(ax for ax in fig.axes if ax.get_title() == "neqa")
  low, _ = neqa.get_ylim()
  assert low > 0.3  # set by the zero-shot curve (55%..90%), not the 0% CoT curve
  assert any("off scale" in t.get_text() for t in neqa.texts)
  average_panel = next(ax for ax in fig.axes if ax.get_title().startswith("Average"))
  assert average_panel.get_ylim()[0] > 0.1  # the 0% CoT average is off scale there too
  titles = [ax.get_title() for ax in fig.axes]
  assert any(t.startswith("Average of 3 tasks: modus-tollens, memo-trap, neqa") or
             t.startswith("Average (tasks differ") for t in titles), titles
  average = [c for c in a.curves if c.task == "average" and c.variant == "zero_shot"
             and c.metric == "accuracy"][0]
  assert average.notes[0].startswith("average of 3 task(s) at every point")


def test_one_model_name_with_two_checkpoints_is_marked(tmp_path):
  """H5: tiny-2's memo-trap 1-shot run used another checkpoint than its other runs."""
  rng = np.random.default_rng(4)
  for m in MODELS:
    for task in ("memo-trap", "neqa"):
      for variant in ("zero_shot", "1_shot"):
        other = m == "tiny-2" and (task, variant) == ("memo-trap", "1_shot")
        write_run(tmp_path / "results", m, task, variant,
                  class_records(m, task, variant, 0.6, rng, n=40),
                  checkpoint=f"{m}-{'reconverted' if other else 'original'}")
  data, summary, _ = _report(tmp_path / "results", tmp_path / "report")
  [mixed] = data["mixed_checkpoints"]
  assert (mixed["family"], mixed["model"]) == ("tiny", "tiny-2")
  assert "2 different checkpoints under one name" in mixed["text"]
  average = _curve(data, "average", "1_shot")
  assert any("tiny-2: the averaged tasks were scored with 2 different checkpoints" in n
             for n in average["notes"])
  assert not any("checkpoints" in n for n in _curve(data, "average", "zero_shot")["notes"])
  assert average["mixed"] == ["tiny-2"] and _curve(data, "average", "zero_shot")["mixed"] == []
  changes = summary.split("## Does the prompt variant change the shape?")[1].split("\n## ")[0]
  memo = [l for l in changes.splitlines() if l.startswith("| tiny | memo-trap | 1_shot")]
  assert memo and "other checkpoints of tiny-2" in memo[0]
  neqa = [l for l in changes.splitlines() if l.startswith("| tiny | neqa | 1_shot")]
  assert neqa and "other checkpoints" not in neqa[0]
  assert "tiny/tiny-2: 2 different checkpoints" in summary.split("## Caveats")[1]


# ---------------------------------------------------------------------------- manifests, plan


def test_trained_flag_in_manifests(tmp_path, tiny_family):
  models = json.loads(tiny_family.read_text())["models"]
  assert all(m["trained"] is False for m in models)
  assert all(m.trained is False for m in family.load(tiny_family).models)
  bad = json.loads(tiny_family.read_text())
  bad["models"][0]["trained"] = "no"
  (tmp_path / "m.json").write_text(json.dumps(bad))
  with pytest.raises(family.ManifestError, match=r"models\[0\]: trained: must be true, false"):
    family.load(tmp_path / "m.json")


def test_a_limit_run_records_how_many_examples_the_task_has(tiny_family, small_data_dir,
                                                            clean_gin):
  from invscale_jax.engine import plan  # pylint: disable=g-import-not-at-top

  fam = family.load(tiny_family)
  [run] = plan.plan(fam, ["tiny-1"], ["neqa"], ["zero_shot"], str(small_data_dir),
                    plan.ScoringOptions(limit=5))
  assert run.info["n_task_examples"] == SMALL_ROWS["neqa"]
  [full] = plan.plan(fam, ["tiny-1"], ["neqa"], ["zero_shot"], str(small_data_dir),
                     plan.ScoringOptions())
  assert "n_task_examples" not in full.info


def test_models_without_a_common_example_are_refused_in_one_line(tmp_path):
  rng = np.random.default_rng(5)
  write_run(tmp_path / "results", "tiny-1", "neqa", "zero_shot",
            class_records("tiny-1", "neqa", "zero_shot", 0.5, rng, n=20))
  later = [dataclasses.replace(r, example_id=r.example_id + 100)
           for r in class_records("tiny-2", "neqa", "zero_shot", 0.5, rng, n=20)]
  write_run(tmp_path / "results", "tiny-2", "neqa", "zero_shot", later, complete=False)
  with pytest.raises(ReportError, match=r"^tiny neqa zero_shot: no example was scored for "
                     r"every model \(tiny-1: 20, tiny-2: 20\); report them separately$"):
    commands.make_report([str(tmp_path / "results")], str(tmp_path / "report"),
                         options=OPTIONS)
  assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("info,want", [
    ({"options": {"dtype": "float32"}, "bos_id": None}, "fp32, no BOS"),
    ({"options": {"dtype": "bfloat16"}, "bos_id": 0, "encoder_eos": True}, "bf16, BOS 0, encoder EOS"),
    ({"options": {"dtype": "float32"}, "bos_id": None, "encoder_eos": False},
     "fp32, no BOS, no encoder EOS"),
    ({"options": {"dtype": "float32"}, "eos_note": "x"}, "fp32, BOS ?"),  # other fields: not read
])
def test_setup_names_dtype_bos_and_encoder_eos(info, want):
  assert caveats.setup(caveats.from_run_info(info)) == want
