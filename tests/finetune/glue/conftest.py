"""Fixtures for the GLUE tests (helpers that write the files live in glue_fixtures.py)."""
import random

import pytest
from glue_fixtures import SIZES, micro_config, sentence, write_task

from bertjax.data import tokenizer


@pytest.fixture(scope="session")
def glue_tokenizer_path(tmp_path_factory):
    """A real sentencepiece model trained on fixture-like text (seconds)."""
    r = random.Random(0)
    lines = [sentence(r, 3, 15) for _ in range(3000)]
    return tokenizer.train(lines, tmp_path_factory.mktemp("tok") / "glue_test", vocab_size=120)


@pytest.fixture(scope="session")
def glue_tokenizer(glue_tokenizer_path):
    return tokenizer.load(glue_tokenizer_path)


@pytest.fixture
def glue_dir(tmp_path):
    """All nine tasks (and the diagnostic set) in the GLUE layout; -> (root, row counts)."""
    root = tmp_path / "glue"
    counts = {t: write_task(root, t) for t in SIZES}
    return root, counts


@pytest.fixture
def micro():
    return micro_config
