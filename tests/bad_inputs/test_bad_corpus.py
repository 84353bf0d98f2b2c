"""Bad corpora: refused before any work with a message naming the file, or (CRLF, one long line,
stray invalid UTF-8) read correctly."""
import gzip
import logging

import numpy as np
import pytest
import tensorflow_datasets as tfds
from bad_input_helpers import COMMITTED_TOKENIZER, bert_corpus

from bertjax.data import corpus, prepare, pretraining
from configs import pretrain

TOK = str(COMMITTED_TOKENIZER)


def _prepare(spec, out, **kw):
    kw.setdefault("eval_fraction", 0.0)
    return prepare.prepare(str(spec), TOK, str(out), num_workers=1, progress=False, **kw)


def _train_records(prepared_dir) -> list:
    source = prepare.load_builder(prepared_dir).as_data_source("train")
    return [(r["tokens"].tolist(), r["sentence_lengths"].tolist()) for r in source]


def _docs(c: corpus.Corpus) -> list:
    return [d.lines for d in c.documents()]


def test_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"data.corpus=.*empty.txt.*1 file\(s\), all empty"):
        _prepare(tmp_path / "empty.txt", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before the dataset directory was made


def test_empty_directory(tmp_path):
    (tmp_path / "corpus").mkdir()
    with pytest.raises(FileNotFoundError, match=r"data.corpus=.*corpus' matches no files"):
        corpus.open_corpus(str(tmp_path / "corpus"))


def test_glob_matching_nothing(tmp_path):
    (tmp_path / "a.txt").write_text("Some text.\n")
    with pytest.raises(FileNotFoundError, match=r"data.corpus=.*\*.gz' matches no files"):
        corpus.open_corpus(str(tmp_path / "*.gz"))


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no_such.txt'.*no such file or directory; "
                                                 r"expected 'default', a file"):
        corpus.open_corpus(str(tmp_path / "no_such.txt"))


def test_binary_file_among_text_files(tmp_path):
    (tmp_path / "a.txt").write_text(bert_corpus(3))
    (tmp_path / "b.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(ValueError, match=r"b.bin: NUL byte at offset 8: a binary file .*expected "
                                         r"UTF-8 text"):
        _prepare(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_stray_invalid_utf8_lines_are_kept_counted_and_reported(tmp_path, caplog):
    """A few corrupt lines in UTF-8 text (as in real dumps): BERT's policy, keep the valid text of
    the line, count it per file in the dataset's stats, and warn."""
    good = "Café crème. Naïve façade. Über straße.\n"
    raw = (good * 20).encode() + b"Bad \xff\xfe bytes here.\n\n" + (good * 5).encode() + \
        b"Cut \xc3 off.\n"
    (tmp_path / "c.txt").write_bytes(raw)
    with caplog.at_level(logging.WARNING):
        meta = _prepare(tmp_path / "c.txt", tmp_path / "out")
    assert meta["stats"]["invalid_utf8_lines"] == {str(tmp_path / "c.txt"): 2}
    assert meta["stats"]["documents"] == 2
    assert any("2 line(s) with invalid UTF-8" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_legacy_single_byte_encoding(tmp_path, encoding):
    text = "Le café est très bon.\nLa crème brûlée, aussi.\n\nGröße: “déjà vu” – naïve.\nOk.\n"
    if encoding == "latin-1":
        text = text.replace("“", '"').replace("”", '"').replace("–", "-")
    (tmp_path / "fr.txt").write_bytes(("Plain ASCII line.\n" * 3 + text).encode(encoding))
    with pytest.raises(ValueError, match=r"fr.txt:4: byte 0xe9 is not UTF-8 .*legacy "
                                         r"single-byte encoding \(latin-1/cp1252\); expected "
                                         r"UTF-8. Convert it, e.g. iconv -f cp1252 -t utf-8"):
        _prepare(tmp_path / "fr.txt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["bert", "files", "wikiextractor"])
def test_crlf_line_endings_give_the_same_documents_as_lf(tmp_path, fmt):
    text = bert_corpus(60, seed=1)
    if fmt == "wikiextractor":
        docs = text.strip("\n").split("\n\n")
        text = "".join(f'<doc id="{i}" title="T{i}">\nT{i}\n{d}\n</doc>\n'
                       for i, d in enumerate(docs))
    for name, newline in (("lf", "\n"), ("crlf", "\r\n")):
        d = tmp_path / name
        d.mkdir()
        (d / "part.txt").write_bytes(text.replace("\n", newline).encode())
    assert b"\r\n" in (tmp_path / "crlf" / "part.txt").read_bytes()
    lf = _docs(corpus.open_corpus(str(tmp_path / "lf"), fmt))
    assert len(lf) == (1 if fmt == "files" else 60)
    # Small units: large CRLF files are cut at their (CRLF) blank lines like LF ones.
    for unit_bytes in (1 << 20, 700):
        crlf = corpus.open_corpus(str(tmp_path / "crlf"), fmt, unit_bytes=unit_bytes)
        if fmt != "files" and unit_bytes == 700:
            assert len(crlf.units()) > 5
        assert _docs(crlf) == lf
    if fmt == "bert":  # and the prepared datasets hold the same token ids
        _prepare(tmp_path / "lf", tmp_path / "out_lf")
        _prepare(tmp_path / "crlf", tmp_path / "out_crlf")
        assert _train_records(tmp_path / "out_crlf") == _train_records(tmp_path / "out_lf")


def test_truncated_gz_stops_naming_the_file_and_a_rerun_after_the_fix_completes(tmp_path):
    full = gzip.compress(bert_corpus(3000).encode())
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text(bert_corpus(50, seed=2))
    (tmp_path / "corpus" / "b.txt.gz").write_bytes(full[: len(full) // 2])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"b.txt.gz: truncated or corrupt gzip file \(EOFError"
                                         r".*expected a complete .gz file"):
        _prepare(tmp_path / "corpus", out, unit_bytes=4096)
    assert not prepare.is_prepared(out)
    (tmp_path / "corpus" / "b.txt.gz").write_bytes(full)
    meta = _prepare(tmp_path / "corpus", out, unit_bytes=4096)
    assert meta["stats"]["documents"] == 3050
    assert not list(out.glob(".work-*")) and not list(out.glob("*/incomplete.*"))


def test_file_named_gz_that_is_not_gzip(tmp_path):
    (tmp_path / "a.txt.gz").write_text(bert_corpus(3))
    with pytest.raises(ValueError, match=r"a.txt.gz: not a readable gzip file .*expected "
                                         r"gzip-compressed text"):
        corpus.open_corpus(str(tmp_path / "a.txt.gz"))


def test_corpus_of_one_document_fails_before_training_nsp_needs_two(tmp_path):
    (tmp_path / "one.txt").write_text(bert_corpus(1))
    _prepare(tmp_path / "one.txt", tmp_path / "out")
    data = pretrain.get_config("tiny").data
    data.tokenizer = TOK
    with pytest.raises(ValueError, match=r"split 'train' of .* gives host 0/1 1 document\(s\); "
                                         r"NSP pairs need at least 2 .*or set data.nsp=False"):
        pretraining.make_iterator(data, str(tmp_path / "out"), global_batch_size=8, seed=0)
    data.nsp = False  # the suggested way out works: MLM-only needs one document
    batch = next(pretraining.make_iterator(data, str(tmp_path / "out"), global_batch_size=8,
                                           seed=0))
    assert batch["input_ids"].shape == (8, data.max_seq_len)


def test_document_of_one_very_long_line_is_cut_into_pieces_that_fill_rows(tmp_path, caplog):
    """A 'sentence' of ~50k words (a file without line breaks, BERT layout): cut at preparation
    into 64-token pieces, so that the pairing fills whole rows from it instead of keeping one
    truncated row per epoch; counted and reported."""
    words = " ".join(np.random.default_rng(0).choice(["alpha", "beta", "gamma", "delta"],
                                                      50_000))
    (tmp_path / "long.txt").write_text(words + "\n\n" + bert_corpus(5))
    with caplog.at_level(logging.WARNING):
        meta = _prepare(tmp_path / "long.txt", tmp_path / "out")
    stats = meta["stats"]
    assert stats["documents"] == 6 and stats["tokens"] > 50_000
    assert stats["long_sentences_cut"] == 1
    assert any("1 sentence(s) longer than 256 tokens" in r.getMessage() for r in caplog.records)
    long_doc = max(_train_records(tmp_path / "out"), key=lambda r: len(r[0]))
    lengths = long_doc[1]
    assert sum(lengths) == len(long_doc[0]) >= 50_000
    assert set(lengths[:-1]) == {prepare.SENTENCE_PIECE} and lengths[-1] <= prepare.SENTENCE_PIECE
    data = pretrain.get_config("tiny").data
    data.tokenizer = TOK
    # Balanced NSP labels: with BERT's default a one-piece chunk is always NotNext, its B from
    # the five short documents, so fewer rows are full; the cut is what this test is about.
    data.nsp_single_sentence = "split"
    batch = next(pretraining.make_iterator(data, str(tmp_path / "out"), global_batch_size=64,
                                           seed=0))
    assert batch["input_ids"].shape == (64, 128)
    # Rows from the long document are full (the five short ones are not, with ~40 tokens each).
    assert (batch["input_mask"].sum(1) == 128).mean() > 0.5


def test_tfds_name_that_does_not_exist_fails_at_once(tmp_path):
    with pytest.raises(ValueError, match=r"data.corpus='tfds:no_such_corpus': TFDS has no "
                                         r"dataset 'no_such_corpus' \(Dataset no_such_corpus not "
                                         r"found.\); expected a registered TFDS name"):
        _prepare("tfds:no_such_corpus", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tfds_dataset_not_prepared_is_not_downloaded(tmp_path, monkeypatch):
    def no_download(*a, **k):
        raise AssertionError("tried to download")
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    with pytest.raises(FileNotFoundError, match=r"TFDS dataset 'lm1b' is not prepared in .*tfds; "
                                                r"download and prepare it once .*set "
                                                r"data.tfds_data_dir=DIR"):
        corpus.open_corpus("tfds:lm1b", tfds_data_dir=str(tmp_path / "tfds"))
