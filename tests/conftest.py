"""Test setup: simulate 8 CPU devices so multi-device code paths run on any machine.

The flag must be set before jax is imported anywhere, which is why it lives here.
"""
import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data, or skip when this checkout has none beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (optional; see README)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def train_wordpiece(tmp_path_factory):
    """Factory: (texts, lower_case, vocab_size=2000) -> a WordPieceTokenizer whose vocab.txt was
    trained on `texts` with Hugging Face `tokenizers` (BERT's normaliser and pre-tokenizer)."""
    pytest.importorskip("tokenizers", reason="WordPiece needs HF tokenizers")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from bertjax.data import wordpiece

    def train(texts, lower_case, vocab_size=2000):
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lower_case)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(
            vocab_size=vocab_size, show_progress=False,
            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
        vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
        assert [i for _, i in vocab] == list(range(len(vocab)))
        d = tmp_path_factory.mktemp("wordpiece")
        (d / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
        return wordpiece.load(d, do_lower_case=lower_case)
    return train
