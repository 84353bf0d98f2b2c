"""IMDB: the aclImdb layout, <br /> markup, the held-out dev split, and TFDS imdb_reviews
through the real TFDS calls on mocked data (no download, no TensorFlow)."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bertjax.finetune.own_data import files, imdb, tfds_records


def write_layout(root, splits=("train", "test"), n=5):
    for split in splits:
        for label in ("pos", "neg"):
            d = root / "IMDB" / "aclImdb" / split / label
            d.mkdir(parents=True)
            for i in (10, 2, 1)[:n] if n <= 3 else range(n):
                (d / f"{i}_{8 if label == 'pos' else 2}.txt").write_text(
                    f"{split} {label} {i}.<br /><br />Second line.<BR>end", encoding="utf-8")
    return root / "IMDB"


def test_layout_with_test_and_held_out_dev(tmp_path):
    d = imdb.load(write_layout(tmp_path, n=10))
    assert d.label_names == ("neg", "pos")
    assert (len(d.train), len(d.dev), len(d.test)) == (18, 2, 20)
    assert any("2 of the 20 training reviews (10%" in n for n in d.notes)
    assert d.test.ids[:3] == ["neg/0_2", "neg/1_2", "neg/2_2"]   # numeric order, neg first
    assert d.test.labels.tolist() == [0] * 10 + [1] * 10
    assert d.test.text_a[0] == "test neg 0.  Second line. end"
    assert set(d.train.ids).isdisjoint(d.dev.ids)
    assert sorted(d.train.ids + d.dev.ids) == sorted(imdb.read_folder(
        tmp_path / "IMDB" / "aclImdb" / "train").ids)
    again = imdb.load(tmp_path / "IMDB" / "aclImdb")      # the aclImdb folder itself works too
    assert again.dev.ids == d.dev.ids                     # the hold-out is fixed


def test_dev_folder_is_used_and_missing_test_noted(tmp_path):
    d = imdb.load(write_layout(tmp_path, splits=("train", "dev"), n=3))
    assert d.test is None and len(d.dev) == 6 and len(d.train) == 6
    assert any("no test split" in n for n in d.notes)
    assert not any("held out" in n for n in d.notes)


def test_bad_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="no aclImdb/train folder"):
        imdb.load(tmp_path)
    (tmp_path / "aclImdb" / "train" / "pos").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"train/neg: not found"):
        imdb.load(tmp_path)
    (tmp_path / "aclImdb" / "train" / "neg").mkdir()
    with pytest.raises(files.OwnDataError, match=r"train/neg: no .txt reviews"):
        imdb.load(tmp_path)


def test_clean():
    assert imdb.clean(" a<br />b<br/>c<br>d<BR />e ") == "a b c d e"


@pytest.mark.shared_data
def test_shared_imdb(shared_data):
    d = imdb.load(shared_data / "imdb")
    assert (len(d.train), len(d.dev), d.test) == (2000, 500, None)
    assert np.bincount(d.dev.labels).tolist() == [250, 250]
    assert not any("<br" in t.lower() for t in d.train.text_a)


def test_tfds_imdb_reviews_on_mock_data():
    with tfds.testing.mock_data(num_examples=20):
        d = imdb.load_tfds(data_dir="/nonexistent/tfds")
    assert (len(d.train), len(d.dev), len(d.test)) == (18, 2, 20)
    assert d.label_names == ("neg", "pos") and d.train.labels.dtype == np.int32
    assert all(isinstance(t, str) for t in d.train.text_a + d.test.text_a)
    assert set(d.train.labels.tolist() + d.test.labels.tolist()) <= {0, 1}
    assert any("held out as dev" in n for n in d.notes)


def test_tfds_not_prepared_and_unknown(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"imdb_reviews/plain_text is not prepared in "
                                                 r".*tfds build imdb_reviews/plain_text"):
        imdb.load_tfds(data_dir=str(tmp_path))
    with pytest.raises(tfds_records.TfdsSourceError, match="no TFDS dataset 'no_such_data'"):
        tfds_records.builder("no_such_data", str(tmp_path))
