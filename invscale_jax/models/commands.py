"""`invscale family init-tiny|show` and `invscale convert hf-gpt-neox|hf-t5`."""

from __future__ import annotations

import argparse

from invscale_jax import family as family_lib


def _init_tiny(args: argparse.Namespace) -> int:
  from invscale_jax.models import tiny  # pylint: disable=g-import-not-at-top
  manifest = tiny.init_tiny(args.out, seed=args.seed, checkpoint_format=args.format)
  print(f"wrote {manifest}")
  return 0


def _show(args: argparse.Namespace) -> int:
  from invscale_jax import checkpoints  # pylint: disable=g-import-not-at-top
  fam = family_lib.resolve_n_params(family_lib.load(args.manifest),
                                    lambda m: checkpoints.count_params(m.checkpoint))
  print(f"family {fam.name}: {fam.description}")
  print(f"{'model':16s} {'architecture':16s} {'params':>15s} {'tokens':>10s} {'FLOPs':>10s}")
  for m in fam.models:
    fmt = lambda x: "-" if x is None else f"{x:.3g}"
    print(f"{m.name:16s} {m.architecture:16s} {m.n_params:15,d} {fmt(m.train_tokens):>10s} "
          f"{fmt(m.compute):>10s}")
  return 0


def _convert(args: argparse.Namespace) -> int:
  import importlib  # pylint: disable=g-import-not-at-top
  converter = importlib.import_module(f"invscale_jax.convert.{args.converter}")
  path = converter.convert(args.src, args.out, step=args.step)
  print(f"wrote {path} and {args.out}/manifest.json (add train_tokens / train_flops there)")
  return 0


def register(subparsers: argparse._SubParsersAction) -> None:
  fam = subparsers.add_parser("family", help="scaled families of models")
  sub = fam.add_subparsers(dest="family_command", required=True)
  p = sub.add_parser("init-tiny", help="create the embedded tiny family (T5X checkpoints + manifest)")
  p.add_argument("--out", required=True)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--format", choices=("legacy", "orbax"), default="legacy",
                 help="checkpoint layout: T5X legacy (msgpack + zarr) or Orbax (T5X's default)")
  p.set_defaults(func=_init_tiny)
  p = sub.add_parser("show", help="models of a manifest with parameters (counted from "
                                  "checkpoints when absent), tokens and compute")
  p.add_argument("manifest")
  p.set_defaults(func=_show)

  conv = subparsers.add_parser("convert", help="Hugging Face checkpoints -> T5X checkpoints")
  sub = conv.add_subparsers(dest="convert_command", required=True)
  for name, module, what in (("hf-gpt-neox", "hf_gpt_neox", "GPT-NeoX / Pythia"),
                             ("hf-t5", "hf_t5", "T5 v1.1 / Flan-T5")):
    p = sub.add_parser(name, help=f"{what} (safetensors or PyTorch, with its tokenizer)")
    p.add_argument("--src", required=True, help="Hugging Face model directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--step", type=int, default=0, help="checkpoint step number")
    p.set_defaults(func=_convert, converter=module)
