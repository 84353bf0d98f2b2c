"""Fine-tuning starts from: checkpoints of pretraining runs and imports, and their tokenizers."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from glue_fixtures import WORDS, write_task

from bertjax import checkpoint
from bertjax.convert import output
from bertjax.data import wordpiece
from bertjax.finetune import grid, pretrained
from bertjax.models import bert


def _params(cfg):
    ids = jnp.zeros((1, 8), jnp.int32)
    return bert.BertForPreTraining(cfg).init(jax.random.PRNGKey(0), ids, ids, ids,
                                             ids[:, :2])["params"]


def _micro_model(vocab_size):
    return bert.BertConfig.from_dict(bert.model_config(
        "tiny", vocab_size=vocab_size, num_layers=1, hidden_size=32, num_heads=2,
        intermediate_size=64))


def test_imported_checkpoint_uses_the_vocab_txt_beside_it(tmp_path, micro, glue_tokenizer):
    vocab = tmp_path / "src" / "vocab.txt"
    vocab.parent.mkdir()
    vocab.write_text("\n".join(list(wordpiece.SPECIAL_TOKENS) + sorted(set(WORDS))) + "\n")
    tok = wordpiece.load(vocab)
    cfg = _micro_model(tok.vocab_size)
    out = tmp_path / "imported"
    output.write_imported(out, traverse_util.flatten_dict(_params(cfg), sep="/"), cfg, tok, source="test",
                          conversion={})
    for path in (out, out / checkpoint.CHECKPOINT_SUBDIR):  # the folder or its checkpoints/
        init = pretrained.resolve_init(micro("SST-2"), str(path))
        assert init.tokenizer.identity() == tok.identity()
        assert init.model_config.vocab_size == tok.vocab_size
    # A tokenizer given explicitly is still checked against the record.
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        pretrained.resolve_init(micro("SST-2"), str(out), str(glue_tokenizer.path))
    # Without the vocabulary the error says what was looked for and what to do.
    (out / "vocab.txt").unlink()
    with pytest.raises(ValueError, match=r"pretrained with tokenizer vocab.txt .*not found.*"
                                         r"--tokenizer"):
        pretrained.resolve_init(micro("SST-2"), str(out))


def test_pretraining_checkpoint_uses_the_tokenizer_its_run_recorded(
        tmp_path, micro, glue_tokenizer, glue_tokenizer_path):
    cfg = _micro_model(glue_tokenizer.vocab_size)
    # As a pretraining run writes it: the run config names the tokenizer model it was given.
    checkpoint.save_pretrained(tmp_path / "ckpt", _params(cfg), cfg, glue_tokenizer.identity(),
                               extra={"config": {"data": {"tokenizer": str(glue_tokenizer_path)}}})
    init = pretrained.resolve_init(micro("SST-2"), str(tmp_path / "ckpt"))
    assert init.tokenizer.identity()["sha256"] == glue_tokenizer.identity()["sha256"]
    # The bert params are host arrays: each run copies them to its devices (and donates them).
    assert all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(init.bert_params))


@pytest.fixture
def pretrained_workdir(tiny_checkpoint):
    """A few steps of tiny pretraining on the built-in corpus, as the README's main job (the
    session's shared run, tests/conftest.py)."""
    return tiny_checkpoint


@pytest.mark.slow
def test_pretrained_checkpoint_fine_tunes_over_two_seeds_and_two_learning_rates(
        tmp_path, micro, pretrained_workdir):
    """Issue 11: the second run crashed with 'Buffer has been deleted or donated' (the first
    run's train step donated the pretrained encoder's arrays). No --tokenizer: the checkpoint's
    own (recorded by the pretraining run) is used."""
    write_task(tmp_path / "glue", "STS-B")
    config = micro("STS-B", learning_rates=(1e-4, 3e-4), num_seeds=2, max_steps=2,
                   max_seq_length=32, predict_test=False)
    config.model.update(hidden_dropout_rate=0.1)  # the runtime fields still apply
    summary = grid.run(config, str(tmp_path / "glue"), str(pretrained_workdir),
                       str(tmp_path / "wd"))
    results = json.loads((tmp_path / "wd" / "STS-B" / "results.json").read_text())
    assert [(r["learning_rate"], r["seed"]) for r in results["runs"]] == [
        (1e-4, 0), (1e-4, 1), (3e-4, 0), (3e-4, 1)]
    assert all(r["steps"] == 2 for r in results["runs"])
    assert results["init"] == str(pretrained_workdir)
    assert results["model"]["size"] == "tiny" and results["model"]["hidden_dropout_rate"] == 0.1
    _, _, identity, _ = checkpoint.load_pretrained(pretrained_workdir)
    assert results["tokenizer"]["sha256"] == identity["sha256"]
    assert set(summary["tasks"]) == {"STS-B"}
    # The runs differ (seed and learning rate matter), so they are four runs, not one.
    assert len({r["dev"]["pearson"] for r in results["runs"]}) == 4
