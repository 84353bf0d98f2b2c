"""CoNLL-2003 reader: layouts, IOB1/IOB2, the tag set, and each bad input with its message."""
import pytest

from bertjax.finetune.ner import reader

IOB1 = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O

Hans NNP I-NP I-PER
Anna NNP I-NP B-PER
"""
IOB2 = """EU NNP B-NP B-ORG
rejects VBZ B-VP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_iob1_file_with_docstart(tmp_path):
    f = reader.read_file(write(tmp_path, "eng.train", IOB1))
    assert [s.words for s in f.sentences] == [
        ("EU", "rejects", "German", "call", "."), ("Peter", "Blackburn"), ("Hans", "Anna")]
    assert f.sentences[0].tags == ("I-ORG", "O", "I-MISC", "O", "O")
    # -DOCSTART- ends a sentence (no blank line before the second one) and opens a document.
    assert [s.document for s in f.sentences] == [0, 0, 1]
    assert [s.line for s in f.sentences] == [3, 9, 13]
    assert f.columns == 4 and f.num_tokens == 9
    assert reader.scheme(f.tags()) == "IOB1"


def test_iob2_two_column_and_scheme(tmp_path):
    f = reader.read_file(write(tmp_path, "train.txt", IOB2))
    assert reader.scheme(f.tags()) == "IOB2"
    two = reader.read_file(write(tmp_path, "two.txt", "EU B-ORG\nsays O\n"))
    assert two.columns == 2 and two.sentences[0].tags == ("B-ORG", "O")
    tabs = reader.read_file(write(tmp_path, "tabs.txt", "EU\tNNP\tB-NP\tB-ORG\n"))
    assert tabs.sentences[0].words == ("EU",)


def test_tag_set_has_both_prefixes_of_every_training_type(tmp_path):
    f = reader.read_file(write(tmp_path, "eng.train", IOB1))
    # IOB1's training file has no B-ORG / B-MISC, but dev files may: same types, so allowed.
    assert reader.tag_set(f) == ("O", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER")
    dev = reader.read_file(write(tmp_path, "eng.testa", "Bonn NNP I-NP B-ORG\n"))
    reader.check_tags_known(dev, reader.tag_set(f))


def test_load_both_layouts_and_optional_test(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    write(a, "eng.train", IOB1)
    write(a, "eng.testa", IOB1)
    data = reader.load(a)
    assert data.test is None and data.scheme == "IOB1"
    assert any("no test file" in n for n in data.notes)
    b = tmp_path / "b"
    b.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        write(b, name, IOB2)
    data = reader.load(b)
    assert len(data.test) == 2 and data.tags == ("O", "B-ORG", "I-ORG", "B-PER", "I-PER")


def test_missing_files_named(tmp_path):
    write(tmp_path, "eng.train", IOB2)
    with pytest.raises(FileNotFoundError, match=r"dev \(eng.testa or valid.txt\)"):
        reader.load(tmp_path)


def test_bad_column_count_names_file_and_line(tmp_path):
    p = write(tmp_path, "eng.train", "EU NNP B-NP B-ORG\nrejects VBZ O\n")
    with pytest.raises(reader.CoNLLFormatError,
                       match=r"eng.train:2: 3 columns, but the file's first line \(line 1\) has 4"):
        reader.read_file(p)


def test_one_column_file(tmp_path):
    with pytest.raises(reader.CoNLLFormatError, match=r"x.txt:1: one column"):
        reader.read_file(write(tmp_path, "x.txt", "EU\n"))


@pytest.mark.parametrize("tag", ["PER", "B-", "E-PER", "S-LOC", "b-PER", "B_PER"])
def test_tag_not_iob_names_file_line_and_tag(tmp_path, tag):
    p = write(tmp_path, "eng.testa", f"EU NNP B-NP B-ORG\n\nBonn NNP B-NP {tag}\n")
    with pytest.raises(reader.CoNLLFormatError,
                       match=rf"eng.testa:3: tag '{tag}' is not an IOB tag"):
        reader.read_file(p)


def test_dev_tag_unknown_to_training_lists_them(tmp_path):
    write(tmp_path, "eng.train", IOB2)
    write(tmp_path, "eng.testa", "EU NNP B-NP B-ORG\nBonn NNP B-NP B-LOC\n\nX NN B-NP I-GPE\n")
    with pytest.raises(reader.CoNLLFormatError) as e:
        reader.load(tmp_path)
    msg = str(e.value)
    assert "eng.testa" in msg and "'B-LOC' (line 2)" in msg and "'I-GPE' (line 4)" in msg
    assert "'B-ORG'" not in msg.split("never occur")[0]


@pytest.mark.parametrize("text", ["", "\n\n", "-DOCSTART- -X- -X- O\n\n"])
def test_empty_file(tmp_path, text):
    with pytest.raises(reader.CoNLLFormatError, match=r"eng.train: no sentences"):
        reader.read_file(write(tmp_path, "eng.train", text))


def test_not_utf8(tmp_path):
    p = tmp_path / "eng.train"
    p.write_bytes(b"EU B-ORG\nM\xfcnchen B-LOC\n")
    with pytest.raises(reader.CoNLLFormatError, match=r"eng.train:2: not UTF-8"):
        reader.read_file(p)


@pytest.mark.shared_data
def test_shared_conll2003(shared_data):
    data = reader.load(shared_data / "conll2003")
    assert (len(data.train), data.train.num_tokens) == (14041, 203621)
    assert (len(data.dev), data.dev.num_tokens) == (3250, 51362)
    assert data.scheme == "IOB2" and data.test is None
    assert data.tags == ("O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG",
                         "B-PER", "I-PER")
