"""Fixtures of the bad-input catalogue (helpers live in bad_input_helpers.py)."""
import random

import pytest
from bad_input_helpers import sentence

from bertjax.data import tokenizer


@pytest.fixture(scope="session")
def small_tokenizers(tmp_path_factory):
    """Two different small SentencePiece models with BERT's special ids (seconds to train)."""
    d = tmp_path_factory.mktemp("tokenizers")
    r = random.Random(0)
    lines = [sentence(r) for _ in range(2000)]
    return (tokenizer.train(lines, d / "a", vocab_size=80),
            tokenizer.train(lines, d / "b", vocab_size=90))
