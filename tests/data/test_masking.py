"""mask_batch alone: statistics over >=100k masked positions, special tokens, options."""
import numpy as np
import pytest

from bertjax.data import masking

VOCAB_SIZE = 1000
SPECIALS = (0, 1, 2, 3, 4)
MASK_ID = 4


def _vocab(word_start=None):
    if word_start is None:
        word_start = np.ones(VOCAB_SIZE, bool)
    return masking.Vocab(VOCAB_SIZE, MASK_ID, SPECIALS, word_start)


def _batch(rng, b=1024, length=128, min_len=20):
    """[CLS] A [SEP] B [SEP] [PAD]... rows of random ordinary tokens with random lengths."""
    ids = rng.integers(5, VOCAB_SIZE, size=(b, length)).astype(np.int32)
    lengths = rng.integers(min_len, length + 1, size=b)
    la = np.maximum(1, (lengths - 3) // 2)
    j = np.arange(length)[None]
    ids[:, 0] = 2
    ids[np.arange(b), la + 1] = 3
    ids[np.arange(b), lengths - 1] = 3
    mask = (j < lengths[:, None]).astype(np.int32)
    ids = np.where(mask > 0, ids, 0)
    seg = ((j >= la[:, None] + 2) & (mask > 0)).astype(np.int32)
    return {"input_ids": ids, "segment_ids": seg, "input_mask": mask,
            "nsp_label": np.zeros(b, np.int32)}


def _outcomes(batch, out):
    """Counts of [MASK] / random / unchanged over valid prediction slots."""
    w = out["masked_weights"] > 0
    rows = np.arange(len(w))[:, None]
    now = out["input_ids"][rows, out["masked_positions"]][w]
    orig = out["masked_ids"][w]
    assert np.array_equal(batch["input_ids"][rows, out["masked_positions"]][w], orig)
    is_mask = now == MASK_ID
    is_same = now == orig
    is_random = ~is_mask & ~is_same
    return is_mask.sum(), is_random.sum(), is_same.sum(), w.sum()


def test_80_10_10_split_and_mask_rate_over_100k_positions():
    rng = np.random.default_rng(0)
    opts = masking.MaskingOptions(mask_rate=0.15, max_predictions=40)
    totals = np.zeros(4)
    maskable = 0
    while totals[3] < 100_000:
        batch = _batch(rng)
        out = masking.mask_batch(batch, rng, _vocab(), opts)
        totals += _outcomes(batch, out)
        maskable += ((batch["input_mask"] > 0) & ~np.isin(batch["input_ids"], SPECIALS)).sum()
    n = totals[3]
    assert n >= 100_000
    # A random replacement equal to the original (1/995) counts as unchanged: fold it back in.
    p_same_random = 1 / (VOCAB_SIZE - len(SPECIALS))
    assert abs(totals[0] / n - 0.8) < 0.01
    assert abs(totals[1] / n - 0.1 * (1 - p_same_random)) < 0.01
    assert abs(totals[2] / n - (0.1 + 0.1 * p_same_random)) < 0.01
    assert abs(n / maskable - 0.15) < 0.005


def test_rate_holds_for_short_rows_by_stochastic_rounding():
    rng = np.random.default_rng(1)
    opts = masking.MaskingOptions(mask_rate=0.15, max_predictions=20)
    n = maskable = 0
    for _ in range(20):
        batch = _batch(rng, length=32, min_len=8)
        out = masking.mask_batch(batch, rng, _vocab(), opts)
        n += out["masked_weights"].sum()
        maskable += ((batch["input_mask"] > 0) & ~np.isin(batch["input_ids"], SPECIALS)).sum()
    assert abs(n / maskable - 0.15) < 0.005
    assert n >= 20_000


def test_special_tokens_are_never_masked_and_random_ids_are_ordinary():
    rng = np.random.default_rng(2)
    opts = masking.MaskingOptions(mask_rate=0.5, mask_token_prob=0.0,
                                      random_token_prob=1.0, max_predictions=128)
    batch = _batch(rng, b=256)
    out = masking.mask_batch(batch, rng, _vocab(), opts)
    w = out["masked_weights"] > 0
    rows = np.arange(len(w))[:, None]
    assert not np.isin(out["masked_ids"][w], SPECIALS).any()
    assert not np.isin(batch["input_ids"][rows, out["masked_positions"]][w], SPECIALS).any()
    # Specials and padding are untouched; every replacement is an ordinary token.
    special = np.isin(batch["input_ids"], SPECIALS)
    assert np.array_equal(out["input_ids"][special], batch["input_ids"][special])
    assert not np.isin(out["input_ids"][~special], SPECIALS).any()
    changed = out["input_ids"] != batch["input_ids"]
    assert changed.sum() > 0.9 * w.sum()  # nearly all replaced (a few drew their own id)


@pytest.mark.parametrize("mix", [(1.0, 0.0), (0.8, 0.0), (0.0, 0.0)])
def test_any_replacement_mix_is_expressible(mix):
    rng = np.random.default_rng(3)
    mask_p, random_p = mix
    opts = masking.MaskingOptions(mask_token_prob=mask_p, random_token_prob=random_p)
    batch = _batch(rng, b=512)
    out = masking.mask_batch(batch, rng, _vocab(), opts)
    masked, randomised, same, n = _outcomes(batch, out)
    assert randomised == 0
    assert abs(masked / n - mask_p) < 0.02
    assert abs(same / n - (1 - mask_p)) < 0.02


def test_outputs_shapes_sorted_positions_and_cap():
    rng = np.random.default_rng(4)
    opts = masking.MaskingOptions(mask_rate=0.5, max_predictions=7)
    batch = _batch(rng, b=64)
    out = masking.mask_batch(batch, rng, _vocab(), opts)
    assert out["masked_positions"].shape == (64, 7)
    assert out["masked_weights"].dtype == np.float32
    assert all(out[k].dtype == np.int32 for k in ("input_ids", "masked_positions", "masked_ids"))
    assert (out["masked_weights"].sum(1) == 7).all()  # 50% of >=17 tokens, capped at 7
    pos = out["masked_positions"]
    assert (np.diff(pos, axis=1) > 0).all()  # sorted, distinct
    short = _batch(rng, b=64, length=16, min_len=5)
    out = masking.mask_batch(short, rng, _vocab(), masking.MaskingOptions())
    w = out["masked_weights"]
    assert (w.sum(1) >= 1).all()
    # Padding slots: position 0, id 0, weight 0, and they trail the real ones.
    assert (out["masked_positions"][w == 0] == 0).all() and (out["masked_ids"][w == 0] == 0).all()
    assert (np.diff(w, axis=1) <= 0).all()


def test_whole_word_masking_takes_whole_words_only():
    rng = np.random.default_rng(5)
    word_start = rng.random(VOCAB_SIZE) < 0.4  # ~2.5 pieces per word
    vocab = _vocab(word_start)
    opts = masking.MaskingOptions(mask_rate=0.15, max_predictions=40, whole_word=True)
    batch = _batch(rng, b=256)
    out = masking.mask_batch(batch, rng, vocab, opts)
    ids = batch["input_ids"]
    maskable = (batch["input_mask"] > 0) & ~np.isin(ids, SPECIALS)
    starts = word_start[ids] | ~maskable
    starts[:, 1:] |= ~maskable[:, :-1]
    word = np.cumsum(starts, axis=1)
    n_words_masked = 0
    for r in range(len(ids)):
        chosen = set(out["masked_positions"][r][out["masked_weights"][r] > 0].tolist())
        for w in np.unique(word[r][maskable[r]]):
            members = set(np.flatnonzero((word[r] == w) & maskable[r]).tolist())
            inter = members & chosen
            assert not inter or inter == members, (r, w, members, chosen)
            n_words_masked += bool(inter)
    assert n_words_masked > 256 * 3
    rate = out["masked_weights"].sum() / maskable.sum()
    assert 0.10 < rate <= 0.15 + 0.01  # whole words stop short of the target at the first misfit


def test_masking_options_are_checked():
    with pytest.raises(ValueError, match="random_token_prob"):
        masking.MaskingOptions(mask_token_prob=0.8, random_token_prob=0.3)
    with pytest.raises(ValueError, match="mask_rate"):
        masking.MaskingOptions(mask_rate=0.0)
    with pytest.raises(ValueError, match="max_predictions_per_seq"):
        masking.MaskingOptions(max_predictions=0)
