"""`invscale lab`: plant a distractor, train a family on it, write its tasks and manifest."""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

from invscale_jax.lab.config import TrainConfig, WorldConfig


def _progress(name: str, steps: int):
  """A tqdm bar for one model's training, with its loss."""
  import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm.tqdm(total=steps, desc=f"train {name}", unit="step", file=sys.stderr,
                  dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 10.0)

  def on_step(step: int, loss: float) -> None:
    if not math.isnan(loss):
      bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    bar.update(1)
    if step == steps - 1:
      bar.close()
  return on_step


def out_dirs(out: str, seed: int, seeds: int) -> list[tuple[int, pathlib.Path]]:
  """(training seed, directory) of each family: OUT itself for one seed, else OUT/seed<s>."""
  if seeds == 1:
    return [(seed, pathlib.Path(out))]
  return [(s, pathlib.Path(out) / f"seed{s}") for s in range(seed, seed + seeds)]


def run(args: argparse.Namespace) -> int:
  from invscale_jax.lab import build  # pylint: disable=g-import-not-at-top  (JAX)
  if args.seeds < 1:
    raise ValueError(f"--seeds: must be at least 1, got {args.seeds}")
  world = WorldConfig(seed=args.world_seed, n_words=args.words, n_famous=args.famous,
                      distractor=args.distractor, rule=args.rule, filler=args.filler,
                      paired=args.paired, n_test=args.test_items)
  for seed, out in out_dirs(args.out, args.seed, args.seeds):
    start = time.time()
    train = TrainConfig(seed=seed, lr=args.lr)
    path, fresh = build.build(out, world, train, progress=_progress)
    kept = len(fresh) - sum(fresh)
    print(f"wrote {path} ({sum(fresh)} models trained in {time.time() - start:.0f} s"
          f"{f', {kept} kept from an earlier run' if kept else ''})")
  return 0


def register(subparsers: argparse._SubParsersAction) -> None:
  d = WorldConfig()
  p = subparsers.add_parser(
      "lab", help="the distractor lab: train a small family on text with a planted "
                  "distractor and write its tasks (lab-conflict, lab-rule, lab-memo) and "
                  "manifest")
  p.add_argument("--out", required=True, help="lab directory (re-running it resumes)")
  p.add_argument("--seed", type=int, default=0, help="training seed (initialisation and "
                                                     "the order of the training text)")
  p.add_argument("--seeds", type=int, default=1,
                 help="train this many families, seeds SEED.., in OUT/seed<s>")
  p.add_argument("--world_seed", type=int, default=d.seed,
                 help="seed of the world: words, famous phrases, test items")
  p.add_argument("--words", type=int, default=d.n_words, help="content words")
  p.add_argument("--famous", type=int, default=d.n_famous, help="famous phrases")
  p.add_argument("--distractor", type=float, default=d.distractor,
                 help="share of training segments that are famous phrases")
  p.add_argument("--rule", type=float, default=d.rule,
                 help="share of training segments that are rule instructions")
  p.add_argument("--filler", type=float, default=d.filler,
                 help="share of training segments that are random phrases")
  p.add_argument("--paired", type=float, default=d.paired,
                 help="share of rule instructions given on a famous phrase")
  p.add_argument("--test_items", type=int, default=d.n_test, help="items per test task")
  p.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate")
  p.set_defaults(func=run)
