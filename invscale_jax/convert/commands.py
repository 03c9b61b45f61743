"""`invscale family init-tiny|show|from-t5x|from-hf`, `invscale convert hf-<architecture>`."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import tempfile

from invscale_jax import checks
from invscale_jax import family as family_lib
from invscale_jax import hf_cache


def _init_tiny(args: argparse.Namespace) -> int:
  from invscale_jax.models import tiny  # pylint: disable=g-import-not-at-top
  manifest = tiny.init_tiny(args.out, seed=args.seed, checkpoint_format=args.format)
  print(f"wrote {manifest}")
  return 0


def _count_params(entry: family_lib.ModelEntry) -> int:
  """Parameters of a model: from its T5X checkpoint, or from its network's shapes."""
  from invscale_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from invscale_jax.convert.configs import load_config  # pylint: disable=g-import-not-at-top
  from invscale_jax.models.model import build  # pylint: disable=g-import-not-at-top
  if entry.checkpoint_format == "t5x":
    return checkpoints.count_params(entry.checkpoint)
  return build(load_config(entry.gin)).num_params()


def _show(args: argparse.Namespace) -> int:
  fmt = lambda x: "-" if x is None else f"{x:.3g}"
  paths = [family_lib.find(m) for m in args.manifest] or family_lib.shipped()
  for i, path in enumerate(paths):
    fam = family_lib.resolve_n_params(family_lib.load(path), _count_params)
    print(("\n" if i else "") + f"family {fam.name} ({path}): {fam.description}")
    print(f"{'model':16s} {'architecture':16s} {'params':>15s} {'tokens':>10s} {'FLOPs':>10s}")
    for m in fam.models:
      print(f"{m.name:16s} {m.architecture:16s} {m.n_params:15,d} {fmt(m.train_tokens):>10s} "
            f"{fmt(m.compute):>10s}")
  return 0


def _from_hf(args: argparse.Namespace) -> int:
  """Writes a manifest scoring Hugging Face directories in place (and their tokenizers
  beside it); written in a temporary directory first, so a failure leaves nothing."""
  from invscale_jax.convert import hf_weights  # pylint: disable=g-import-not-at-top
  out = pathlib.Path(args.out)
  if out.exists():
    raise ValueError(f"{out}: exists; choose another --out")
  local_name = lambda d: pathlib.Path(d).expanduser().resolve().name
  names = args.name.split(",") if args.name else [
      hf_cache.model_name(d) if hf_cache.is_name(d) else local_name(d) for d in args.dirs]
  sources = [hf_cache.resolve(d) if hf_cache.is_name(d) else d for d in args.dirs]
  if len(names) != len(args.dirs) or len(set(names)) != len(names):
    raise ValueError(f"--name: need {len(args.dirs)} distinct names, got {names}")
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
  try:
    entries = [hf_weights.manifest_entry(src, tmp, name) for src, name in zip(sources, names)]
    for entry, given in zip(entries, args.dirs):
      if hf_cache.is_name(given):  # the name, not this cache's snapshot path
        entry["hf_dir"] = given
    manifest = {"family": args.family or family_lib.default_name(out.resolve()),
                "description": "Hugging Face model directories scored in place (hf_dir); "
                               "add train_tokens / train_flops.",
                "models": entries}
    (tmp / out.name).write_text(json.dumps(manifest, indent=1) + "\n", "utf-8")
    for f in sorted(tmp.iterdir()):
      os.replace(f, out.parent / f.name)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  print(f"wrote {out} ({len(entries)} models; add train_tokens / train_flops there)")
  return 0


def _from_t5x(args: argparse.Namespace) -> int:
  from invscale_jax import vocab_spec  # pylint: disable=g-import-not-at-top
  from invscale_jax.convert import from_t5x  # pylint: disable=g-import-not-at-top
  numbers = lambda text: [float(x) for x in text.split(",")] if text else None
  path = from_t5x.write_manifest(
      args.out, args.sources, names=args.name.split(",") if args.name else None,
      checkpoints=args.checkpoint, step=args.step,
      vocabulary=vocab_spec.spec_of(args.vocabulary) if args.vocabulary else None,
      train_tokens=numbers(args.train_tokens), train_flops=numbers(args.train_flops),
      family=args.family)
  print(f"wrote {path}")
  return 0


def _convert(args: argparse.Namespace) -> int:
  import importlib  # pylint: disable=g-import-not-at-top
  from invscale_jax.convert import hf_weights  # pylint: disable=g-import-not-at-top
  converter = importlib.import_module(f"invscale_jax.convert.{args.converter}").CONVERTER
  path = hf_weights.convert(converter, args.src, args.out, step=args.step)
  print(f"wrote {path} and {args.out}/manifest.json (add train_tokens / train_flops there)")
  return 0


def register(subparsers: argparse._SubParsersAction) -> None:
  fam = subparsers.add_parser("family", help="scaled families of models")
  sub = fam.add_subparsers(dest="family_command", required=True)
  p = sub.add_parser("init-tiny", help="create the embedded tiny family (T5X checkpoints + manifest)")
  p.add_argument("--out", required=True, type=checks.path_flag, metavar="DIR",
                 help="directory to write the checkpoints and manifest.json into")
  p.add_argument("--seed", type=checks.int_flag(0, 2**31 - 1), default=0,
                 help="seed of the random initialisation (default: %(default)s)")
  p.add_argument("--format", choices=("legacy", "orbax"), default="legacy",
                 help="checkpoint layout: T5X legacy (msgpack + zarr) or Orbax (T5X's default)")
  p.set_defaults(func=_init_tiny)
  p = sub.add_parser("show", help="models of manifests (paths or shipped family names; "
                                  "none: every shipped one) with parameters (counted when "
                                  "absent), tokens and compute")
  p.add_argument("manifest", nargs="*", metavar="MANIFEST_OR_NAME",
                 help="manifest paths or URLs, or shipped family names (default: every "
                      "shipped family)")
  p.set_defaults(func=_show)
  p = sub.add_parser("from-t5x", help="a manifest of T5X models as they are: model dirs "
                                      "(config.gin + checkpoint_<step>/) or T5X gin files")
  p.add_argument("sources", nargs="+", metavar="DIR_OR_GIN",
                 help="T5X model dirs, or T5X gin files (each with a --checkpoint)")
  p.add_argument("--out", required=True, type=checks.path_flag, help="manifest to write (JSON)")
  p.add_argument("--name", help="comma-separated model names (default: the model dirs' names)")
  p.add_argument("--checkpoint", action="append",
                 help="the checkpoint of each gin file source, in order")
  p.add_argument("--step", type=checks.int_flag(0),
                 help="checkpoint step of the model dirs (default: latest)")
  p.add_argument("--vocabulary", help="the models' vocabulary (default: the one the gin file "
                                      "names): a .model file, a tokenizer.json or a JSON spec")
  p.add_argument("--train_tokens", help="training tokens D: one value, or one per model")
  p.add_argument("--train_flops", help="training FLOPs C: one value, or one per model")
  p.add_argument("--family", default="t5x", help="family name (default: %(default)s)")
  p.set_defaults(func=_from_t5x)
  p = sub.add_parser("from-hf", help="a manifest scoring Hugging Face model directories "
                                     "directly (no conversion)")
  p.add_argument("dirs", nargs="+", metavar="HF_DIR",
                 help="Hugging Face model directories, or hf:ORG/NAME[@REVISION]: a model "
                      "in the local Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or "
                      "~/.cache/huggingface/hub; never downloaded), kept as that name in the "
                      "manifest")
  p.add_argument("--out", required=True, type=checks.path_flag,
                 help="manifest path (must not exist)")
  p.add_argument("--name", help="comma-separated model names (default: the directories' names)")
  p.add_argument("--family", help="family name (default: the manifest's file name, or its "
                                      "directory's name for DIR/manifest.json)")
  p.set_defaults(func=_from_hf)

  conv = subparsers.add_parser("convert", help="Hugging Face checkpoints -> T5X checkpoints")
  sub = conv.add_subparsers(dest="convert_command", required=True)
  for name, module, what in (("hf-gpt-neox", "hf_gpt_neox", "GPT-NeoX / Pythia"),
                             ("hf-t5", "hf_t5", "T5 v1.1 / Flan-T5"),
                             ("hf-opt", "hf_opt", "OPT"),
                             ("hf-llama", "hf_llama", "Llama, Mistral, Qwen2/2.5, SmolLM2"),
                             ("hf-gpt2", "hf_gpt2", "GPT-2")):
    p = sub.add_parser(name, help=f"{what} (safetensors or PyTorch, with its tokenizer)")
    p.add_argument("--src", required=True, help="Hugging Face model directory")
    p.add_argument("--out", required=True, type=checks.path_flag, help="output directory")
    p.add_argument("--step", type=checks.int_flag(0), default=0, help="checkpoint step number")
    p.set_defaults(func=_convert, converter=module)
