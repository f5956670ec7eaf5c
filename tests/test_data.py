"""Data pipeline: sources and their bad inputs, shards and the split, packing, the mixture sampler."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hunyuan_large.data import DataError, MixtureSampler, SourceStats, TokenStream, build_category, iter_documents
from hunyuan_large.data.shards import in_validation
from hunyuan_large.data.sources import stdlib_files
from hunyuan_large.tokenizer import HunyuanTokenizer

TEXT = "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n    y: int = 0\n" * 20


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    HunyuanTokenizer.train([TEXT, "hello world " * 50], 600).save(folder)
    return folder


def test_sources_read_every_format_and_count_bad_input(tmp_path):
    (tmp_path / "a.txt").write_text("plain text file")
    (tmp_path / "empty.txt").write_text("   \n")
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe bytes")
    (tmp_path / "r.jsonl").write_text('{"text": "one"}\nnot json\n{"text": ""}\n{"other": 1}\n{"text": "two"}\n')
    pq.write_table(pa.table({"text": ["p1", None, "p2"]}), tmp_path / "t.parquet")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")  # not a text suffix: ignored in folders
    stats = SourceStats()
    docs = list(iter_documents([str(tmp_path)], "text", stats))
    assert sorted(d.text for d in docs) == sorted(["plain text file", "ok \ufffd\ufffd bytes", "one", "two", "p1", "p2"])
    assert stats.empty_skipped == 3  # empty.txt, the empty jsonl text, the null parquet row
    assert stats.undecodable_bytes == 2 and stats.files_with_undecodable == 1
    assert stats.bad_records == 2  # malformed JSON and a record without the field
    glob_docs = list(iter_documents([str(tmp_path / "*.jsonl")], "text", SourceStats()))
    assert [d.text for d in glob_docs] == ["one", "two"]


def test_missing_source_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="matches no file"):
        list(iter_documents([str(tmp_path / "nope" / "*.txt")], "text", SourceStats()))
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match="no column 'text'"):
        list(iter_documents([str(tmp_path / "t.parquet")], "text", SourceStats()))


def test_stdlib_corpus_excludes_tests_and_site_packages():
    files = stdlib_files()
    assert len(files) > 300
    assert not any(part in ("test", "tests", "site-packages") for f in files for part in f.parts[-4:-1])


def test_shards_hold_every_document_with_separators_and_a_stable_split(tmp_path, tok_dir):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i}.py").write_text(f"# file {i}\n" + TEXT[: 50 + i])
    tok = HunyuanTokenizer.from_pretrained(tok_dir)
    meta = build_category([str(src)], tok_dir, "h", tmp_path / "out", val_fraction=0.25, workers=2)
    want = {"train": [], "val": []}
    for f in sorted(src.iterdir()):
        split = "val" if in_validation(f.name, 0.25) else "train"
        want[split] += [tok.bos_id] + tok.encode_document(f.read_text()) + [tok.eod_id]
    for split in ("train", "val"):
        got = np.concatenate([np.fromfile(tmp_path / "out" / s["file"], dtype=np.uint32) for s in meta[split]])
        assert got.tolist() == want[split]
    assert 0 < sum(s["documents"] for s in meta["val"]) < 40
    # Unchanged sources: the cache is reused; a changed file rebuilds.
    before = (tmp_path / "out" / "meta.json").stat().st_mtime_ns
    assert build_category([str(src)], tok_dir, "h", tmp_path / "out", val_fraction=0.25, workers=1) == meta
    assert (tmp_path / "out" / "meta.json").stat().st_mtime_ns == before
    (src / "f0.py").write_text("changed = True\n")
    assert build_category([str(src)], tok_dir, "h", tmp_path / "out", val_fraction=0.25, workers=1) != meta


def _stream(tmp_path, name, tokens, seq_len):
    (tmp_path / f"{name}.bin").write_bytes(np.asarray(tokens, np.uint32).tobytes())
    return TokenStream(tmp_path, [{"file": f"{name}.bin", "tokens": len(tokens)}], seq_len)


def test_packing_chunks_overlap_by_one_token(tmp_path):
    s = _stream(tmp_path, "a", list(range(100)), seq_len=8)
    assert s.num_chunks == 12  # (100 - 1) // 8
    assert s.chunk(0).tolist() == list(range(9)) and s.chunk(11).tolist() == list(range(88, 97))


def test_sampler_is_deterministic_resumable_and_switches_mixture(tmp_path):
    streams = {"a": _stream(tmp_path, "a", list(range(0, 500)), 4),
               "b": _stream(tmp_path, "b", list(range(1000, 1500)), 4)}

    def fresh():
        return MixtureSampler(streams, {"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0}, batch_size=3, seed=7)

    s1 = fresh()
    batches = [s1.next_batch() for _ in range(5)]
    assert all((b < 1000).all() for b in batches)  # main mixture: only category a
    assert (s1.next_batch(anneal=True) >= 1000).all()  # anneal mixture: only b
    s2 = fresh()
    for _ in range(2):
        s2.next_batch()
    state = json.loads(json.dumps(s2.state_dict()))  # survives a round trip through JSON
    s3 = fresh()
    s3.load_state_dict(state)
    assert all(torch.equal(s3.next_batch(), b) for b in batches[2:])
    # An epoch visits every chunk exactly once.
    one = MixtureSampler({"a": streams["a"]}, {"a": 1.0}, None, batch_size=1, seed=0)
    seen = {int(one.next_batch()[0, 0]) for _ in range(streams["a"].num_chunks)}
    assert seen == {4 * i for i in range(streams["a"].num_chunks)}


def test_mixture_weights_are_respected(tmp_path):
    streams = {"a": _stream(tmp_path, "a", list(range(0, 4000)), 4),
               "b": _stream(tmp_path, "b", list(range(10000, 14000)), 4)}
    s = MixtureSampler(streams, {"a": 0.8, "b": 0.2}, None, batch_size=50, seed=1)
    rows = torch.cat([s.next_batch() for _ in range(20)])
    share_a = (rows[:, 0] < 10000).float().mean().item()
    assert abs(share_a - 0.8) < 0.05


def test_sampler_rejects_unknown_categories(tmp_path):
    streams = {"a": _stream(tmp_path, "a", list(range(100)), 4)}
    with pytest.raises(DataError, match="unknown categories: b"):
        MixtureSampler(streams, {"a": 1.0}, {"b": 1.0}, 2, 0)
