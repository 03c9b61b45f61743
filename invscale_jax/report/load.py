"""Reads RESULTS directories into validated runs, one per (family, model, task, variant)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
from typing import Any, Mapping, Sequence

from invscale_jax import caveats as caveats_lib
from invscale_jax import family as family_lib
from invscale_jax import records as records_lib
from invscale_jax import results as results_lib
from invscale_jax import storage, task_registry
from invscale_jax.data import declarations
from invscale_jax.report.errors import ReportError

_RUN_FIELDS = ("run_key", "family", "model", "task", "variant")


@dataclasses.dataclass(frozen=True)
class Run:
  family: str
  model: family_lib.ModelEntry  # from the --family manifest if given, else from run.json
  task: str  # release name
  variant: str
  run_key: str
  path: str
  problem: str | None  # why the run is not complete (None: verified complete)
  n_expected: int | None  # n_examples from run.json
  records: tuple[records_lib.Record, ...]
  caveats: caveats_lib.RunCaveats | None = None  # subset, truncation, dtype, BOS, trained
  identity: str = ""  # the model's checkpoint, network and vocabulary ("": not recorded)
  seed_group: str | None = None  # the design whose training seed `seed` this family is
  seed: int | None = None

  @property
  def complete(self) -> bool:
    return self.problem is None


def task_name(name: Any, where: str) -> str:
  """The release name of a task; an unknown name raises ReportError."""
  try:
    return task_registry.get(str(name)).name
  except KeyError as e:
    raise ReportError(f"{where}: {e.args[0]}") from None


def declare_recorded_task(info: Mapping[str, Any], where: str) -> None:
  """Declares the task whose declaration run.json keeps (`task_spec`, your own tasks), so
  that the report needs nothing but the results."""
  if "task_spec" not in info:
    return
  try:
    task_registry.add([declarations.parse(info["task_spec"], f"{where}: task_spec",
                                          str(info.get("task_source", "")))])
  except declarations.DeclarationError as e:  # another run, or --task_dirs, declares it otherwise
    raise ReportError(f"{where}: task_spec: {e}") from None


def model_entry(d: Any, where: str) -> family_lib.ModelEntry:
  """A ModelEntry from run.json's "model" (the manifest entry as a dict)."""
  if not isinstance(d, Mapping) or "name" not in d:
    raise ReportError(f"{where}: model: must be an object with a name")
  return family_lib.ModelEntry(
      name=str(d["name"]), architecture=str(d.get("architecture", "decoder_only")),
      gin=str(d.get("gin", "")), checkpoint=str(d.get("checkpoint", "")),
      vocabulary=dict(d.get("vocabulary") or {}), n_params=d.get("n_params"),
      train_tokens=d.get("train_tokens"), train_flops=d.get("train_flops"),
      trained=d.get("trained") if isinstance(d.get("trained"), bool) else None)


def model_identity(info: Mapping[str, Any]) -> str:
  """A short hash of what makes a model that model in a run (its checkpoint's content,
  network and vocabulary); "" when run.json records none of them."""
  parts = {k: info[k] for k in ("checkpoint", "network", "vocabulary") if k in info}
  if not parts:
    return ""
  blob = json.dumps(parts, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:12]


def seed_group(info: Mapping[str, Any], fam: family_lib.Family | None,
               where: str) -> tuple[str | None, int | None]:
  """(seed group, seed) of a run: the --family manifest's, else run.json's `seed_group`."""
  if fam is not None:
    return fam.seed_group, fam.seed
  if "seed_group" not in info:
    return None, None
  if not isinstance(info["seed_group"], Mapping):
    raise ReportError(f"{where}: seed_group: must be an object with seed_group and seed, "
                      f"got {info['seed_group']!r}")
  try:
    return family_lib.seed_group(f"{where}: seed_group", dict(info["seed_group"]))
  except family_lib.ManifestError as e:
    raise ReportError(str(e)) from None


def _read_run(run_dir: str, manifests: Mapping[str, family_lib.Family]) -> Run:
  where = storage.join(run_dir, results_lib.RUN_INFO)
  try:
    info = results_lib.read_run_info(run_dir)
  except ValueError as e:  # names the file and the field
    raise ReportError(str(e)) from None
  except OSError as e:
    raise ReportError(f"{where}: unreadable: {e}") from None
  missing = [k for k in _RUN_FIELDS if not isinstance(info, dict) or k not in info]
  if missing:
    raise ReportError(f"{where}: missing {', '.join(missing)}")
  declare_recorded_task(info, where)
  task = task_name(info["task"], where)
  entry = model_entry(info["model"], where)
  family_name = str(info["family"])
  if family_name in manifests:
    try:
      entry = manifests[family_name].get(entry.name)
    except family_lib.ManifestError as e:
      raise ReportError(f"{where}: {e}") from None
  try:
    recs = tuple(results_lib.read_records(run_dir))
  except ValueError as e:
    raise ReportError(str(e)) from None
  expected = (str(info["run_key"]), entry.name, task, str(info["variant"]))
  for r in recs:
    got = (r.run_key, r.model, task_name(r.task, str(run_dir)), r.variant)
    if got != expected:
      raise ReportError(f"{run_dir}: record of example {r.example_id} is for (run_key, model, "
                        f"task, variant) {got}, run.json says {expected}")
  n_examples = info.get("n_examples")
  group, seed = seed_group(info, manifests.get(family_name), where)
  caveats = caveats_lib.from_run_info(info)
  if entry.trained is not None:  # the --family manifest's word
    caveats = dataclasses.replace(caveats, trained=entry.trained)
  return Run(family=family_name, model=entry, task=task, variant=str(info["variant"]),
             run_key=str(info["run_key"]), path=run_dir,
             problem=results_lib.verify_complete(run_dir, info),
             n_expected=n_examples if isinstance(n_examples, int) else None, records=recs,
             caveats=caveats, identity=model_identity(info), seed_group=group, seed=seed)


def _check_model_figures(runs: Sequence[Run]) -> None:
  """One model of a family must have one set of size and compute figures."""
  figures = collections.defaultdict(dict)
  for run in runs:
    key = (run.model.n_params, run.model.train_tokens, run.model.train_flops)
    figures[(run.family, run.model.name)].setdefault(key, run.path)
  for (fam, model), seen in figures.items():
    if len(seen) > 1:
      raise ReportError(f"{fam}/{model}: runs disagree on (n_params, train_tokens, "
                        f"train_flops): {list(seen)}; pass --family MANIFEST to settle them")


def _check_seed_groups(runs: Sequence[Run]) -> None:
  """A family is one seed of at most one group, and a group's families have distinct seeds."""
  of_family: dict[str, tuple[tuple[str | None, int | None], str]] = {}
  for run in runs:
    seen, path = of_family.setdefault(run.family, ((run.seed_group, run.seed), run.path))
    if seen != (run.seed_group, run.seed):
      raise ReportError(f"{run.family}: runs disagree on (seed_group, seed): {seen} in {path}, "
                        f"{(run.seed_group, run.seed)} in {run.path}")
  by_seed: dict[tuple[str, int], str] = {}
  for fam, ((group, seed), _) in sorted(of_family.items()):
    if group is not None:
      other = by_seed.setdefault((group, seed), fam)
      if other != fam:
        raise ReportError(f"seed group {group!r}: families {other!r} and {fam!r} both say "
                          f"seed {seed}")


def load_runs(results_dirs: Sequence[str | pathlib.Path],
              manifests: Sequence[family_lib.Family] = ()) -> list[Run]:
  """Every run under the RESULTS directories, validated; bad input raises ReportError."""
  by_family: dict[str, family_lib.Family] = {}
  for fam in manifests:
    if fam.name in by_family:
      raise ReportError(f"{fam.path}: family {fam.name!r} also given by {by_family[fam.name].path}")
    by_family[fam.name] = fam
  runs: dict[tuple[str, str, str, str], Run] = {}
  for results in results_dirs:
    root = storage.absolute(results)
    if not storage.is_dir(root):
      raise ReportError(f"{root}: results directory not found")
    dirs = results_lib.run_dirs(root)
    if not dirs:
      raise ReportError(f"{root}: no runs (expected {root}/runs/<run_key>/run.json)")
    for run_dir in dirs:
      run = _read_run(run_dir, by_family)
      key = (run.family, run.model.name, run.task, run.variant)
      if key in runs:
        other = runs[key]
        raise ReportError(
            f"mixed runs for {run.family}/{run.model.name} {run.task} {run.variant}: "
            f"{other.path} (run key {other.run_key}) and {run.path} (run key {run.run_key}); "
            "report one of them")
      runs[key] = run
  unused = sorted(set(by_family) - {r.family for r in runs.values()})
  if unused:
    raise ReportError(f"{by_family[unused[0]].path}: family {unused[0]!r} has no runs in the "
                      f"results (families there: {sorted({r.family for r in runs.values()})})")
  _check_model_figures(list(runs.values()))
  _check_seed_groups(list(runs.values()))
  return list(runs.values())
