import collections
import gzip

import numpy as np
import pytest
import tensorflow_datasets as tfds

from bertjax.data import corpus, default_corpus, holdout, prepare, tfds_corpus


def _docs(c, stats=None):
    return [(d.key, d.lines) for d in c.documents(stats)]


def test_bert_layout(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("First sentence.\nSecond one.\n\n\nOther doc.\n  \nThird doc, one line.\n")
    c = corpus.open_corpus(str(f))
    assert c.format == "bert" and c.lines_are_sentences
    assert _docs(c) == [("a.txt:0", ["First sentence.", "Second one."]),
                        ("a.txt:30", ["Other doc."]), ("a.txt:44", ["Third doc, one line."])]


def test_wikiextractor_layout_skips_the_title(tmp_path):
    f = tmp_path / "wiki_00"
    f.write_text('<doc id="1" url="u" title="Alpha">\nAlpha\n\nAlpha is a letter. It is first.\n'
                 'Second paragraph.\n</doc>\n<doc id="2" url="u" title="Beta">\nBeta\n\n</doc>\n')
    c = corpus.open_corpus(str(f))
    assert c.format == "wikiextractor" and not c.lines_are_sentences
    docs = list(c.documents())
    assert len(docs) == 2 and docs[1].lines == []  # Beta has no text: passed on, to be counted
    assert docs[0].lines == ["Alpha is a letter. It is first.", "Second paragraph."]
    assert corpus.sentences(docs[0], c.lines_are_sentences) == [
        "Alpha is a letter.", "It is first.", "Second paragraph."]


def test_one_document_per_file_with_gzip_and_glob(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "one.txt").write_text("Hard wrapped\nparagraph here.\n\nSecond para.\n")
    with gzip.open(tmp_path / "d" / "two.txt.gz", "wt") as f:
        f.write("Zipped document.")
    (tmp_path / "d" / ".hidden").write_text("ignored")
    c = corpus.open_corpus(str(tmp_path / "d"), "files")
    assert _docs(c) == [("one.txt", ["Hard wrapped paragraph here.", "Second para."]),
                        ("two.txt.gz", ["Zipped document."])]
    g = corpus.open_corpus(str(tmp_path / "d" / "*.gz"), "files")
    assert [k for k, _ in _docs(g)] == ["two.txt.gz"]


def test_invalid_utf8_is_counted_per_file_not_fatal(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"Good line.\nBad \xff\xfe line.\n\nAlso \xc3 bad.\n")
    stats = corpus.ReadStats()
    docs = _docs(corpus.open_corpus(str(f), "bert"), stats)
    assert docs[0][1] == ["Good line.", "Bad  line."] and docs[1][1] == ["Also  bad."]
    assert stats.invalid_utf8 == {str(f): 2}


@pytest.mark.parametrize("fmt", ["bert", "wikiextractor"])
def test_large_files_split_into_units_without_losing_or_repeating_documents(tmp_path, fmt):
    rng = np.random.default_rng(0)
    f = tmp_path / "big.txt"
    with open(f, "w") as out:
        for d in range(300):
            lines = [f"doc {d} line {i} " + "x" * int(rng.integers(0, 80))
                     for i in range(int(rng.integers(1, 6)))]
            if fmt == "bert":
                out.write("\n".join(lines) + "\n\n")
            else:
                out.write(f'<doc id="{d}" title="T{d}">\nT{d}\n' + "\n".join(lines) + "\n</doc>\n")
    whole = corpus.open_corpus(str(f), fmt)
    split = corpus.open_corpus(str(f), fmt, unit_bytes=2000)
    assert len(whole.units()) == 1 and len(split.units()) > 10
    assert _docs(split) == _docs(whole)
    assert len(_docs(whole)) == 300


def test_default_corpus_is_offline_english_text():
    c = corpus.open_corpus("default")
    docs = list(c.documents())
    assert len(docs) > 100
    sentences = [s for d in docs for s in corpus.sentences(d, c.lines_are_sentences)]
    assert len(sentences) > 1000
    assert any("statement" in s for s in sentences)
    assert not any(s.startswith("   ") for d in docs for s in d.lines)  # code blocks dropped


def test_sentence_splitter_keeps_abbreviations():
    assert corpus.split_sentences("Dr. Smith arrived at 5 p.m. on Monday. He left.") == [
        "Dr. Smith arrived at 5 p.m. on Monday.", "He left."]


def test_bad_specs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        corpus.open_corpus(str(tmp_path / "no_such_dir"))
    with pytest.raises(FileNotFoundError, match="matches no files"):
        corpus.open_corpus(str(tmp_path / "*.xyz"))
    with pytest.raises(ValueError, match="corpus_format='xml'"):
        corpus.open_corpus("default", "xml")
    with pytest.raises(ValueError, match="no_such_dataset"):
        corpus.open_corpus("tfds:no_such_dataset", tfds_data_dir=str(tmp_path))


class LocalTexts(tfds.core.GeneratorBasedBuilder):
    """A small TFDS text dataset over local strings, to test the real TFDS loading code offline."""
    VERSION = tfds.core.Version("1.0.0")
    TEXTS = [f"Document {i} starts here. It has two sentences.\nAnd a second paragraph {i}."
             for i in range(45)]

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"text": tfds.features.Text(), "id": np.int32}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, t in enumerate(self.TEXTS):
            yield i, {"text": t, "id": i}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfds")
    LocalTexts(data_dir=str(d), file_format="array_record").download_and_prepare()
    return str(d)


def test_tfds_text_dataset(tfds_dir, monkeypatch):
    monkeypatch.setattr(tfds_corpus.TfdsCorpus, "records_per_unit", 20)
    c = corpus.open_corpus("tfds:local_texts", tfds_data_dir=tfds_dir)
    assert c.num_records == 45 and c.random_access and len(c.units()) == 3
    docs = list(c.documents())
    assert len(docs) == 45
    lines = sorted(d.lines for d in docs)
    assert sorted([t.split("\n") for t in LocalTexts.TEXTS]) == lines
    assert len(set(d.key for d in docs)) == 45
    with pytest.raises(ValueError, match="no split 'test'"):
        corpus.open_corpus("tfds:local_texts:test", tfds_data_dir=tfds_dir)


def test_prepare_from_tfds(tfds_dir, tmp_path, committed_tokenizer):
    meta = prepare.prepare("tfds:local_texts", str(committed_tokenizer.path), tmp_path / "out",
                           tfds_data_dir=tfds_dir, eval_fraction=0.0, progress=False)
    assert meta["stats"]["documents"] == 45 and meta["stats"]["sentences"] == 45 * 3


def test_duplicate_families_link_through_shared_long_paragraphs():
    long_a, long_b = "one two three four five six seven eight", "a b c d e f g h i"
    docs = [corpus.Document("d0", [long_a, "See also:"]),
            corpus.Document("d1", ["x", long_a, long_b]),
            corpus.Document("d2", [long_b]),           # linked to d0 through d1
            corpus.Document("d3", ["See also:"]),      # shares only a short paragraph
            corpus.Document("d4", [])]
    assert default_corpus.duplicate_families(docs) == ["d0", "d0", "d0", "d3", "d4"]


def test_default_corpus_holdout_keeps_duplicates_on_one_side():
    docs = list(corpus.open_corpus("default").documents())
    families = collections.Counter(d.group for d in docs)
    assert all(d.group for d in docs) and sum(n > 1 for n in families.values()) >= 10
    long = default_corpus.FAMILY_MIN_WORDS

    def paragraphs(ds):
        return {p for d in ds for p in d.lines if len(p.split()) >= long}

    for fraction in (0.05, 0.1, 0.3):
        held = [d for d in docs if holdout.is_eval_document(d.holdout_key, fraction)]
        kept = [d for d in docs if not holdout.is_eval_document(d.holdout_key, fraction)]
        assert held and kept and not paragraphs(held) & paragraphs(kept)
    # Held out one by one, as before, the same corpus leaked duplicates into eval.
    held = [d for d in docs if holdout.is_eval_document(d.key, 0.3)]
    kept = [d for d in docs if not holdout.is_eval_document(d.key, 0.3)]
    assert paragraphs(held) & paragraphs(kept)
