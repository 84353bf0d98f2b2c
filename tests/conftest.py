"""Test setup: simulate 8 CPU devices so multi-device code paths run on any machine.

The flag must be set before jax is imported anywhere, which is why it lives here.
"""
import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent XLA compilation cache for this test session (a fresh directory each session,
# inherited by the entry points the tests run as subprocesses): the tiny model's train and eval
# steps are compiled by dozens of tests with the same shapes, and a cache hit replaces a compile
# of tens of seconds on this CPU by a file read. Results are the same executables either way.
# BERTJAX_TEST_COMPILE_CACHE=0 turns it off (to time or debug compiles).
if os.environ.get("BERTJAX_TEST_COMPILE_CACHE", "1") != "0" and \
        "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="bertjax-test-xla-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

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


def pytest_sessionfinish(session, exitstatus):
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", "")
    if os.path.basename(cache).startswith("bertjax-test-xla-cache-"):
        import shutil
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session")
def default_prepared(tmp_path_factory):
    """The built-in default corpus prepared once for the session, as `configs/pretrain.py:tiny`
    prepares it (its tokenizer and eval_fraction): for tests that need *a* prepared dataset,
    not a preparation. Read-only for them (a test that prepares prepares its own)."""
    from bertjax.data import pretraining
    from pretrain_helpers import tiny_pretrain_config
    d = tmp_path_factory.mktemp("prepared") / "default"
    return pretraining.prepare_if_needed(tiny_pretrain_config(d).data, d)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, default_prepared):
    """The workdir of one 3-step tiny pretraining run on the default corpus (checkpoint at step
    3, one eval): for tests that need *a* pretraining checkpoint. Copy it before writing."""
    from bertjax import train
    from pretrain_helpers import tiny_pretrain_config
    workdir = tmp_path_factory.mktemp("tiny_checkpoint") / "run"
    train.train_and_evaluate(tiny_pretrain_config(default_prepared, **{
        "train.steps": 3, "train.log_every": 3, "train.eval_every": 3,
        "train.checkpoint_every": 3, "optim.warmup_steps": 1}), str(workdir))
    return workdir
