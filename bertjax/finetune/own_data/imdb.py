"""IMDB movie reviews (Maas et al. 2011) in the aclImdb layout -> labelled Splits.

  <dir>/aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt   (<dir> may also be aclImdb itself)
  <dir>/aclImdb/dev/{pos,neg}/...                           optional (../shared/data/imdb has one)

Labels: neg = 0, pos = 1 (TFDS imdb_reviews's order). Reviews are read in a fixed order (neg
then pos, by numeric id). The `<br />` line breaks of the HTML the reviews were scraped from
become spaces. `train/unsup` (unlabelled) and the bag-of-words files are not read.

Model selection needs a dev set that is not the test set. Without `dev/`, a fixed 10% of the
training reviews (chosen by a seed-0 permutation, the same on every machine) is held out as
dev, and the returned notes say so (for results.json). Without `test/` there is no test score,
also noted.

The same reviews from TFDS (`imdb_reviews`, `load_tfds`) get the same cleaning, labels and
held-out dev.
"""
from __future__ import annotations

import os
import pathlib
import re
from typing import Sequence

import numpy as np

from bertjax.finetune.own_data import tfds_records
from bertjax.finetune.own_data.files import OwnData, OwnDataError
from bertjax.finetune.glue.tasks import Split

LABELS = ("neg", "pos")
DEV_FRACTION = 0.1
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def clean(text: str) -> str:
    """`<br />` (and `<br>`, `<br/>`) -> a space; outer whitespace stripped."""
    return _BREAK.sub(" ", text).strip()


def _review_key(path: pathlib.Path):
    stem = path.stem.split("_")[0]
    return (0, int(stem), path.name) if stem.isdigit() else (1, 0, path.name)


def read_folder(folder: pathlib.Path) -> Split:
    """<folder>/{neg,pos}/*.txt -> Split (ids: 'neg/123_4')."""
    texts, labels, ids = [], [], []
    for label, name in enumerate(LABELS):
        sub = folder / name
        if not sub.is_dir():
            raise FileNotFoundError(f"{sub}: not found (the aclImdb layout has "
                                    f"{folder.name}/pos and {folder.name}/neg)")
        files = sorted(sub.glob("*.txt"), key=_review_key)
        if not files:
            raise OwnDataError(f"{sub}: no .txt reviews")
        for f in files:
            try:
                texts.append(clean(f.read_text(encoding="utf-8")))
            except UnicodeDecodeError as e:
                raise OwnDataError(f"{f}: not UTF-8 text ({e})") from None
            labels.append(label)
            ids.append(f"{name}/{f.stem}")
    return Split(str(folder), texts, None, np.array(labels, np.int32), ids)


def subset(split: Split, rows: np.ndarray, where: str) -> Split:
    pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
    return Split(where, pick(split.text_a),
                 pick(split.text_b) if split.text_b is not None else None,
                 split.labels[rows] if split.labels is not None else None, pick(split.ids))


def hold_out(split: Split, fraction: float = DEV_FRACTION, seed: int = 0
             ) -> tuple[Split, Split, str]:
    """A fixed `fraction` of `split` as dev -> (train, dev, note). Rows keep their order."""
    n = len(split)
    k = max(1, int(round(fraction * n)))
    if n < 2:
        raise OwnDataError(f"{split.path}: {n} example(s); cannot hold out a dev set")
    chosen = np.zeros(n, bool)
    chosen[np.random.default_rng(seed).permutation(n)[:k]] = True
    train = subset(split, np.flatnonzero(~chosen), split.path)
    dev = subset(split, np.flatnonzero(chosen), f"{split.path} (held-out dev)")
    note = (f"no dev split: {k} of the {n} training reviews ({fraction:.0%}, fixed by a seed-"
            f"{seed} permutation) are held out as dev for model selection")
    return train, dev, note


def find_root(directory: str | os.PathLike) -> pathlib.Path:
    d = pathlib.Path(directory)
    for root in (d / "aclImdb", d):
        if (root / "train").is_dir():
            return root
    raise FileNotFoundError(f"{d}: no aclImdb/train folder (expected the aclImdb layout: "
                            "aclImdb/{train,test}/{pos,neg}/*.txt, optionally aclImdb/dev/)")


def load(directory: str | os.PathLike) -> OwnData:
    root = find_root(directory)
    train, notes = read_folder(root / "train"), []
    if (root / "dev").is_dir():
        dev = read_folder(root / "dev")
    else:
        train, dev, note = hold_out(train)
        notes.append(note)
    test = read_folder(root / "test") if (root / "test").is_dir() else None
    if test is None:
        notes.append(f"no test split ({root / 'test'} not found): dev scores only")
    notes.insert(0, f"labels (class index order): {list(LABELS)}")
    return OwnData(train, dev, test, LABELS, notes)


# --- TFDS imdb_reviews ------------------------------------------------------------------------
TFDS_NAME = "imdb_reviews"


def _text(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def split_from_records(records: Sequence[dict], where: str) -> Split:
    """imdb_reviews records ({'text', 'label'}) -> Split, cleaned as the aclImdb reader does."""
    texts = [clean(_text(r["text"])) for r in records]
    labels = np.array([int(r["label"]) for r in records], np.int32)
    return Split(where, texts, None, labels, [str(i) for i in range(len(texts))])


def load_tfds(data_dir: str | None = None) -> OwnData:
    """TFDS imdb_reviews: train (less the held-out 10% dev, as for the aclImdb layout without
    dev/) and test."""
    b = tfds_records.builder(TFDS_NAME, data_dir)
    names = tuple(b.info.features["label"].names)
    if names != LABELS:
        raise OwnDataError(f"tfds {TFDS_NAME}: label names {names}, expected {LABELS}")
    train = split_from_records(tfds_records.read_records(b, "train"), f"tfds:{TFDS_NAME}:train")
    test = split_from_records(tfds_records.read_records(b, "test"), f"tfds:{TFDS_NAME}:test")
    train, dev, note = hold_out(train)
    return OwnData(train, dev, test, LABELS, [f"labels (class index order): {list(LABELS)}",
                                              note])
