"""Fixtures for the data tests: the committed tokenizer, and a synthetic prepared dataset whose
token ids name their own position in the corpus, so pairing can be checked exactly."""
import pathlib

import ml_collections
import numpy as np
import pytest

from bertjax.data import corpus as corpus_lib
from bertjax.data import prepare, tokenizer
from configs import pretrain

REPO = pathlib.Path(__file__).resolve().parents[2]
COMMITTED_TOKENIZER = REPO / "tokenizers" / "enwiki_30522_unigram.model"
FIRST_ID = 5  # ids below are special


@pytest.fixture(scope="session")
def committed_tokenizer():
    return tokenizer.load(COMMITTED_TOKENIZER)


class CountingTokenizer:
    """Stands in for the committed tokenizer (same identity) but maps the word 'tN' to id N."""

    def __init__(self, real):
        self.real = real
        self.vocab_size, self.sha256 = real.vocab_size, real.sha256

    def identity(self):
        return self.real.identity()

    def encode_batch(self, sentences, parse_specials=True):
        return [[int(w[1:]) for w in s.split()] for s in sentences]


class ListCorpus(corpus_lib.Corpus):
    """Documents given as lists of sentences, in one unit."""
    lines_are_sentences = True

    def __init__(self, docs, name="synthetic"):
        self.docs, self.description = docs, name

    def units(self):
        return [corpus_lib.Unit(nbytes=1)]

    def read(self, unit, stats):
        for i, doc in enumerate(self.docs):
            yield corpus_lib.Document(f"{self.description}:{i}", doc)


def _synthetic_documents(num_docs, rng, *, min_sentences=1, max_sentences=12, min_len=2,
                        max_len=20):
    """Sentences of consecutive ids: every token id is unique and in reading order."""
    docs, doc_of, next_id = [], {}, FIRST_ID
    for d in range(num_docs):
        sentences = []
        for _ in range(rng.integers(min_sentences, max_sentences + 1)):
            n = int(rng.integers(min_len, max_len + 1))
            sentences.append(" ".join(f"t{i}" for i in range(next_id, next_id + n)))
            for i in range(next_id, next_id + n):
                doc_of[i] = d
            next_id += n
        docs.append(sentences)
    return docs, doc_of, next_id


def write_synthetic(prepared_dir, docs, real_tokenizer, eval_fraction=0.0):
    builder = prepare.Documents(data_dir=str(prepared_dir), corpus=ListCorpus(docs),
                                tokenizer=CountingTokenizer(real_tokenizer),
                                eval_fraction=eval_fraction, num_workers=1,
                                corpus_spec="synthetic", progress=False)
    builder.download_and_prepare()
    return prepared_dir


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory, committed_tokenizer):
    """300 documents, ~22k unique token ids; returns (prepared_dir, doc_of: id -> document)."""
    docs, doc_of, last = _synthetic_documents(300, np.random.default_rng(0))
    assert last < committed_tokenizer.vocab_size
    d = write_synthetic(tmp_path_factory.mktemp("synthetic"), docs, committed_tokenizer)
    return d, doc_of


def _data_config(**overrides) -> ml_collections.ConfigDict:
    c = pretrain.get_config("tiny").data
    c.tokenizer = str(COMMITTED_TOKENIZER)
    c.update(overrides)
    return c


@pytest.fixture
def data_config():
    """Factory: the tiny config's data section with the committed tokenizer, plus overrides."""
    return _data_config


@pytest.fixture
def make_synthetic(committed_tokenizer):
    """Factory: (prepared_dir, docs, eval_fraction=0) -> a prepared dataset of those documents."""
    def make(prepared_dir, docs, eval_fraction=0.0):
        return write_synthetic(prepared_dir, docs, committed_tokenizer, eval_fraction)
    return make


@pytest.fixture
def synthetic_documents():
    """Factory: (num_docs, rng, ...) -> (docs as sentence strings, id -> document, next id)."""
    return _synthetic_documents
