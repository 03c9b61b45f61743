"""Requests built from task rows with the model's own tokenizer (the scoring path, no
TensorFlow) equal those read from the SeqIO tasks, for every task and variant and each
kind of vocabulary; the request cache reuses them and misses on any changed input."""

from __future__ import annotations

import pathlib

import pytest

from conftest import FIXTURE_DATA, task_file
from invscale_jax import catalog, tokenizer, vocab
from invscale_jax.data import task_rows, variants
from invscale_jax.engine import request_cache, requests

MAX_LENGTH = 512  # short enough that long prompts lose demonstrations and get cut
SPM_MODEL = pathlib.Path(vocab.seqio.__file__).parent / "test_data" / "sentencepiece" / "sentencepiece.model"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
  """Every task: the 8 fixture files and the first 6 rows of each real file present."""
  root = tmp_path_factory.mktemp("rows_data")
  for spec in catalog.TASKS:
    source = task_file(spec.filename)
    if source.parent == FIXTURE_DATA:
      (root / spec.filename).symlink_to(source)
    elif source.is_file():
      lines = [line for line in source.read_text(encoding="utf-8").splitlines(True) if line.strip()]
      (root / spec.filename).write_text("".join(lines[:6]), encoding="utf-8")
  return root


@pytest.fixture(scope="module", params=["byte", "hf_tokenizer", "sentencepiece"])
def spec(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
  if request.param == "byte":
    return {"type": "byte"}
  if request.param == "sentencepiece":
    if not SPM_MODEL.is_file():
      pytest.skip(f"no SentencePiece model at {SPM_MODEL}")
    return {"type": "sentencepiece", "path": str(SPM_MODEL)}
  tokenizers = pytest.importorskip("tokenizers")
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = tokenizers.decoders.ByteLevel()
  texts = [line for f in sorted(FIXTURE_DATA.glob("*.jsonl")) for line in f.read_text("utf-8").splitlines()]
  bpe.train_from_iterator(texts, tokenizers.trainers.BpeTrainer(
      vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False,
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
  path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
  bpe.save(str(path))
  return {"type": "hf_tokenizer", "path": str(path)}


def as_tuples(reqs: list[requests.Request]) -> list[tuple]:
  return [(r.example_id, r.kind, r.prompt_text, r.prefix.tolist(), r.answer_index, r.n_truncated,
           r.n_demos_dropped, [(b.context.tolist(), b.target.tolist(), b.text) for b in r.branches])
          for r in reqs]


def test_same_requests_as_the_seqio_tasks(spec: dict, data_dir: pathlib.Path) -> None:
  import seqio_tasks  # pylint: disable=g-import-not-at-top
  seqio_vocab, plain = vocab.from_spec(spec), tokenizer.from_spec(spec)
  assert plain.vocab_size == seqio_vocab.vocab_size and plain.eos_id == seqio_vocab.eos_id
  checked = 0
  for task in catalog.TASKS:
    if not (data_dir / task.filename).exists():
      continue
    for variant in seqio_tasks.tasks.VARIANTS:
      room = 32 if variants.parse(variant).chain_of_thought else 0
      options = task_rows.PromptOptions(0, MAX_LENGTH, room)
      seqio_task = seqio_tasks.build_task(task.name, variant, seqio_vocab, options, str(data_dir))
      rows = task_rows.rows_for(task, variants.parse(variant), requests.MemoEncoder(plain),
                                options, str(data_dir))
      for tokenization, bos_id in (("separate", None), ("joint", 0)):
        want = requests.from_task(seqio_task, seqio_vocab, tokenization, MAX_LENGTH, bos_id)
        got = requests.from_task_rows(rows, plain, tokenization, MAX_LENGTH, bos_id)
        assert as_tuples(got) == as_tuples(want), (task.name, variant, tokenization)
        checked += 1
  assert checked >= 2 * 6 * 8
  ids = plain.encode("Héllo wörld — 3.14 ✓")
  assert plain.decode(ids + [plain.eos_id or 1] + ids) == seqio_vocab.decode(
      ids + [seqio_vocab.eos_id or 1] + ids)


def test_request_cache_reuses_and_misses_on_any_change(tmp_path: pathlib.Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
  monkeypatch.setenv("INVSCALE_CACHE_DIR", str(tmp_path))
  monkeypatch.setattr(request_cache, "_MEMORY", {})
  rows = task_rows.rows_for(catalog.get("redefine"), variants.parse("1_shot"),
                            tokenizer.ByteTokenizer(), task_rows.PromptOptions(), str(FIXTURE_DATA))
  built = []

  def build() -> list[requests.Request]:
    built.append(1)
    return requests.from_task_rows(rows, tokenizer.ByteTokenizer(), bos_id=0)

  parts = {"task": "redefine", "data_sha256": "a" * 64, "variant": "1_shot",
           "vocabulary": "byte", "bos_id": 0, "max_length": 2048, "options": {"seed": 0}}
  first = request_cache.cached(parts, build)
  assert request_cache.cached(parts, build) is first and len(built) == 1  # in memory
  monkeypatch.setattr(request_cache, "_MEMORY", {})
  assert as_tuples(request_cache.cached(parts, build)) == as_tuples(first)  # from disk
  assert len(built) == 1
  for change in ({"data_sha256": "b" * 64}, {"variant": "3_shot"}, {"vocabulary": "spm:x"},
                 {"bos_id": None}, {"max_length": 1024}, {"options": {"seed": 1}}):
    request_cache.cached(dict(parts, **change), build)
  assert len(built) == 7  # every changed input was a miss
  dry = dict(parts, variant="zero_shot")
  request_cache.cached(dry, build, store=False)  # as `--dry_run`: kept in memory only
  assert not pathlib.Path(request_cache.path(request_cache.key(dry))).exists()
  assert len(built) == 8
  path = pathlib.Path(request_cache.path(request_cache.key(parts)))
  path.write_text("[{\"truncated", encoding="utf-8")
  monkeypatch.setattr(request_cache, "_MEMORY", {})
  assert as_tuples(request_cache.cached(parts, build)) == as_tuples(first)  # rebuilt
  assert len(built) == 9


def test_seeds_and_task_directories_share_requests() -> None:
  """Runs of a lab design's seeds, or of one task in two directories, make the same
  requests: their cache key is the same; the task's data is not."""
  info = {"model": {"name": "lab-1"}, "checkpoint": "c0", "network": "n", "run_key": "k0",
          "family": "lab-seed0", "seed_group": {"seed_group": "lab", "seed": 0},
          "task_source": "/a", "task": "lab-memo", "data_sha256": "a" * 64,
          "variant": "zero_shot", "vocabulary": "v", "bos_id": 0, "max_length": 512}
  other = dict(info, model={"name": "lab-2"}, checkpoint="c1", run_key="k1", family="lab-seed1",
               seed_group={"seed_group": "lab", "seed": 1}, task_source="/b")
  key = lambda i: request_cache.key(request_cache.request_parts(i))
  assert key(other) == key(info)
  assert key(dict(info, data_sha256="b" * 64)) != key(info)
