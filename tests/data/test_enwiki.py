"""The pipeline on real Wikipedia text (../shared/data/corpus/enwiki): skipped when absent."""
import numpy as np
import pytest

from bertjax.data import prepare, pretraining


@pytest.mark.shared_data
def test_enwiki_sample_prepares_and_pairs(shared_data, tmp_path, committed_tokenizer,
                                          data_config):
    files = sorted((shared_data / "corpus" / "enwiki" / "AA").glob("wiki_0[0-1]"))
    assert files, "expected wiki_00, wiki_01"
    cfg = data_config(corpus=str(shared_data / "corpus" / "enwiki" / "AA" / "wiki_0[0-1]"))
    prepared = pretraining.prepare_if_needed(cfg, tmp_path)
    stats = prepare.metadata(prepared)["stats"]
    assert stats["documents"] > 50 and stats["invalid_utf8_lines"] == {}
    assert stats["tokens"] / stats["sentences"] > 10  # real sentences, not fragments
    it = pretraining.make_iterator(cfg, prepared, global_batch_size=512, seed=0)
    batches = [next(it) for _ in range(10)]
    labels = np.concatenate([b["nsp_label"] for b in batches])
    assert abs((labels == 0).mean() - 0.5) < 0.02
    lengths = np.concatenate([b["input_mask"].sum(1) for b in batches])
    # BERT's length profile: mostly full rows, about short_seq_prob of documents short.
    assert np.median(lengths) >= 120 and (lengths < 64).mean() < 0.25
    unk = np.mean([np.mean(b["input_ids"][b["input_mask"] > 0] == 1) for b in batches])
    assert unk < 0.005
