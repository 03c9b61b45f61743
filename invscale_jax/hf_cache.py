"""`hf:ORG/NAME[@REVISION]`: a model in the local Hugging Face cache, found without network.

The cache is the one `huggingface_hub` (and so transformers and lm-evaluation-harness)
writes: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; a model is
`models--ORG--NAME/snapshots/<commit>/`, and `refs/<branch>` holds the commit a branch
points to. The revision is a branch (default `main`) or a commit hash. Nothing is
downloaded: a model not in the cache is an error saying how to get it.
"""

from __future__ import annotations

import os
import re

PREFIX = "hf:"
_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def is_name(value: str) -> bool:
  return isinstance(value, str) and value.startswith(PREFIX)


def cache_dir() -> str:
  """The hub cache directory, as huggingface_hub chooses it."""
  if os.environ.get("HF_HUB_CACHE"):
    return os.path.expanduser(os.environ["HF_HUB_CACHE"])
  home = os.environ.get("HF_HOME") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
  return os.path.join(os.path.expanduser(home), "hub")


def model_name(value: str) -> str:
  """The model's own name: `hf:EleutherAI/pythia-70m@main` -> `pythia-70m`."""
  return value.removeprefix(PREFIX).partition("@")[0].rsplit("/", 1)[-1]


def resolve(value: str) -> str:
  """The snapshot directory of `hf:ORG/NAME[@REVISION]` in the local cache."""
  repo, _, revision = value.removeprefix(PREFIX).partition("@")
  if not _NAME.match(repo):
    raise ValueError(f"{value}: not a Hugging Face model name (hf:ORG/NAME[@REVISION])")
  root = cache_dir()
  model_dir = os.path.join(root, "models--" + repo.replace("/", "--"))
  get = f"download it first, e.g. `huggingface-cli download {repo}` (invscale never downloads)"
  snapshots = os.path.join(model_dir, "snapshots")
  if not os.path.isdir(snapshots):
    raise FileNotFoundError(f"{value}: not in the local Hugging Face cache ({root}, from "
                            f"HF_HUB_CACHE / HF_HOME); {get}")
  ref = os.path.join(model_dir, "refs", revision or "main")
  commit = revision
  if os.path.isfile(ref):
    with open(ref, encoding="utf-8") as f:
      commit = f.read().strip()
  elif not revision:  # no refs/main: the one snapshot there is, if there is one
    found = sorted(os.listdir(snapshots))
    if len(found) != 1:
      raise FileNotFoundError(f"{value}: {snapshots} holds {len(found)} snapshots and no "
                              f"refs/main; name one: {value}@<commit>")
    commit = found[0]
  path = os.path.join(snapshots, commit)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{value}: revision {revision or 'main'} ({commit}) is not in "
                            f"the local Hugging Face cache ({snapshots}); {get}")
  return path
