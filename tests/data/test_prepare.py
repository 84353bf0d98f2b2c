import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from bertjax.data import corpus, holdout, prepare, pretraining


def _write_bert_corpus(path, num_docs, rng, empty_every=0):
    words = "the a river city was is of and in on to by from north old new great".split()
    docs = []
    with open(path, "w") as f:
        for d in range(num_docs):
            sentences = [" ".join(rng.choice(words, size=int(rng.integers(3, 15)))).capitalize()
                         + "." for _ in range(int(rng.integers(1, 8)))]
            docs.append(sentences)
            f.write("\n".join(sentences) + "\n\n")
    return docs


def _records(prepared_dir, split):
    source = prepare.load_builder(prepared_dir).as_data_source(split)
    return [source[i] for i in range(len(source))]


def _as_sentences(record):
    bounds = np.cumsum(np.concatenate([[0], record["sentence_lengths"]]))
    return tuple(tuple(record["tokens"][a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:]))


def test_documents_are_stored_as_tokenized_sentences(tmp_path, committed_tokenizer):
    docs = _write_bert_corpus(tmp_path / "c.txt", 40, np.random.default_rng(0))
    meta = prepare.prepare(str(tmp_path / "c.txt"), str(committed_tokenizer.path),
                           tmp_path / "out", eval_fraction=0.0, progress=False)
    records = _records(tmp_path / "out", "train")
    assert records[0]["tokens"].dtype == np.uint16
    expected = sorted(tuple(tuple(committed_tokenizer.encode(s)) for s in d) for d in docs)
    assert sorted(_as_sentences(r) for r in records) == expected
    assert meta["tokenizer"] == committed_tokenizer.identity()
    stats = meta["stats"]
    assert stats["documents"] == 40 and stats["empty_documents"] == 0
    assert stats["sentences"] == sum(len(d) for d in docs)
    assert stats["tokens"] == sum(len(t) for d in expected for t in d)
    assert "eval" not in prepare.load_builder(tmp_path / "out").info.splits
    assert not any(p.name.startswith(".work") for p in (tmp_path / "out").iterdir())


def test_parallel_preparation_equals_serial(tmp_path, committed_tokenizer):
    _write_bert_corpus(tmp_path / "c.txt", 300, np.random.default_rng(1))
    tok = str(committed_tokenizer.path)
    serial = prepare.prepare(str(tmp_path / "c.txt"), tok, tmp_path / "serial", num_workers=1,
                             eval_fraction=0.1, progress=False)
    parallel = prepare.prepare(str(tmp_path / "c.txt"), tok, tmp_path / "parallel",
                               num_workers=2, eval_fraction=0.1, unit_bytes=4096, progress=False)
    assert parallel["stats"]["units"] > 4 and serial["stats"]["units"] == 1
    for split in ("train", "eval"):
        a = sorted(_as_sentences(r) for r in _records(tmp_path / "serial", split))
        b = sorted(_as_sentences(r) for r in _records(tmp_path / "parallel", split))
        assert a == b and len(a) > 0
    for key in ("documents", "train_documents", "eval_documents", "sentences", "tokens"):
        assert serial["stats"][key] == parallel["stats"][key]


def test_eval_documents_are_held_out_by_key_hash(tmp_path, committed_tokenizer):
    _write_bert_corpus(tmp_path / "c.txt", 200, np.random.default_rng(2))
    c = corpus.open_corpus(str(tmp_path / "c.txt"))
    keys = [d.key for d in c.documents()]
    want_eval = sum(holdout.is_eval_document(k, 0.25) for k in keys)
    meta = prepare.prepare(str(tmp_path / "c.txt"), str(committed_tokenizer.path),
                           tmp_path / "out", eval_fraction=0.25, progress=False)
    assert meta["stats"]["eval_documents"] == want_eval and 30 < want_eval < 70
    assert meta["stats"]["train_documents"] == 200 - want_eval
    train = {_as_sentences(r) for r in _records(tmp_path / "out", "train")}
    evals = {_as_sentences(r) for r in _records(tmp_path / "out", "eval")}
    assert not train & evals


def test_small_corpus_gets_at_least_two_eval_documents(tmp_path, committed_tokenizer):
    _write_bert_corpus(tmp_path / "c.txt", 8, np.random.default_rng(3))
    meta = prepare.prepare(str(tmp_path / "c.txt"), str(committed_tokenizer.path),
                           tmp_path / "out", eval_fraction=0.01, progress=False)
    assert meta["stats"]["eval_documents"] == 2 and meta["stats"]["train_documents"] == 6
    assert len(_records(tmp_path / "out", "eval")) == 2
    assert len(_records(tmp_path / "out", "train")) == 6


def test_empty_documents_are_dropped_and_counted(tmp_path, committed_tokenizer):
    (tmp_path / "d").mkdir()
    for i, text in enumerate(["Some text here.", "", "  \n\n ", "More text.\n\nAnd more."]):
        (tmp_path / "d" / f"{i}.txt").write_text(text)
    meta = prepare.prepare(str(tmp_path / "d"), str(committed_tokenizer.path), tmp_path / "out",
                           corpus_format="files", eval_fraction=0.0, progress=False)
    assert meta["stats"]["documents"] == 2 and meta["stats"]["empty_documents"] == 2
    with pytest.raises(ValueError, match="produced no training documents"):
        prepare.prepare(str(tmp_path / "d" / "2.txt"), str(committed_tokenizer.path),
                        tmp_path / "empty", corpus_format="files", progress=False)
    assert not prepare.is_prepared(tmp_path / "empty")


def test_prepared_data_is_reused_and_never_mixed(tmp_path, committed_tokenizer):
    _write_bert_corpus(tmp_path / "c.txt", 20, np.random.default_rng(4))
    tok = str(committed_tokenizer.path)
    prepare.prepare(str(tmp_path / "c.txt"), tok, tmp_path / "out", progress=False)
    info = prepare.builder_dir(tmp_path / "out") / "dataset_info.json"
    mtime = os.path.getmtime(info)
    prepare.prepare(str(tmp_path / "c.txt"), tok, tmp_path / "out", progress=False)
    assert os.path.getmtime(info) == mtime

    from bertjax.data import tokenizer
    other = tokenizer.train([s for d in corpus.open_corpus("default").documents()
                     for s in corpus.sentences(d, False)][:800], tmp_path / "other",
                    vocab_size=200)
    with pytest.raises(ValueError, match=r"prepared with tokenizer 'enwiki_30522_unigram.model'"
                                         r".*not with 'other.model'.*vocab_size 200"):
        prepare.prepare(str(tmp_path / "c.txt"), str(other), tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="prepared from corpus"):
        prepare.prepare("default", tok, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="eval_fraction=0.01, not 0.5"):
        prepare.prepare(str(tmp_path / "c.txt"), tok, tmp_path / "out", eval_fraction=0.5,
                        progress=False)


def test_interrupted_preparation_resumes_and_leaves_no_partial_dataset(
        tmp_path, committed_tokenizer, monkeypatch):
    _write_bert_corpus(tmp_path / "c.txt", 200, np.random.default_rng(5))
    args = (str(tmp_path / "c.txt"), str(committed_tokenizer.path), tmp_path / "out")
    kwargs = dict(num_workers=1, unit_bytes=3000, progress=False, eval_fraction=0.1)
    run_unit, calls = prepare._run_unit, []

    def failing(job):
        if job[0] == 3:
            raise KeyboardInterrupt("simulated crash")
        calls.append(job[0])
        return run_unit(job)

    monkeypatch.setattr(prepare, "_run_unit", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare(*args, **kwargs)
    assert calls == [0, 1, 2]
    assert not prepare.is_prepared(tmp_path / "out")
    assert not list((tmp_path / "out" / prepare.NAME).glob("*incomplete*"))

    def counting(job):
        calls.append(job[0])
        return run_unit(job)

    calls.clear()
    monkeypatch.setattr(prepare, "_run_unit", counting)
    meta = prepare.prepare(*args, **kwargs)
    assert calls[0] == 3 and 0 not in calls  # finished units were not redone
    assert meta["stats"]["documents"] == 200

    fresh = prepare.prepare(args[0], args[1], tmp_path / "fresh", **kwargs)
    assert {k: v for k, v in fresh["stats"].items() if "seconds" not in k and "per_s" not in k} \
        == {k: v for k, v in meta["stats"].items() if "seconds" not in k and "per_s" not in k}


def test_prepare_if_needed_defaults_to_workdir(tmp_path, committed_tokenizer, data_config):
    _write_bert_corpus(tmp_path / "c.txt", 10, np.random.default_rng(6))
    cfg = data_config(corpus=str(tmp_path / "c.txt"))
    prepared = pretraining.prepare_if_needed(cfg, tmp_path / "work")
    assert prepared == os.path.join(tmp_path / "work", "prepared")
    assert prepare.is_prepared(prepared)
    # Readable with plain TFDS, without any bertjax class.
    builder = tfds.builder_from_directory(str(prepare.builder_dir(prepared)))
    assert builder.info.splits["train"].num_examples + \
        builder.info.splits["eval"].num_examples == 10
    assert json.loads(json.dumps(builder.info.metadata["tokenizer"]))["vocab_size"] == 30522


class _GroupedCorpus(corpus.Corpus):
    """60 one-sentence documents in groups of three."""
    description = "grouped"

    def units(self):
        return [corpus.Unit(nbytes=1)]

    def read(self, unit, stats):
        for i in range(60):
            yield corpus.Document(f"doc{i}", [f"Document {i} is in group {i // 3}."],
                                  group=f"g{i // 3}")


def test_a_group_is_held_out_whole_and_tfds_download_words_are_not_printed(
        tmp_path, committed_tokenizer, capfd, caplog):
    builder = prepare.Documents(data_dir=str(tmp_path / "out"), corpus=_GroupedCorpus(),
                                tokenizer=committed_tokenizer, eval_fraction=0.3, num_workers=1,
                                corpus_spec="grouped", progress=False)
    with caplog.at_level("INFO", logger="bertjax"):
        builder.download_and_prepare()
    docs = list(_GroupedCorpus().documents())
    want = {tuple(committed_tokenizer.encode(d.lines[0])) for d in docs
            if holdout.is_eval_document(d.group, 0.3)}
    by_key = sum(holdout.is_eval_document(d.key, 0.3) for d in docs)
    assert 3 <= len(want) <= 36 and len(want) % 3 == 0 and len(want) != by_key
    got = {s for r in _records(tmp_path / "out", "eval") for s in _as_sentences(r)}
    assert got == want
    printed = capfd.readouterr()
    assert "Downloading and preparing" not in printed.out + printed.err
    assert "downloaded and prepared" not in printed.out + printed.err
    assert "preparing grouped with enwiki_30522_unigram.model" in caplog.text
    assert f"60 documents ({len(want)} held out for evaluation)" in caplog.text
