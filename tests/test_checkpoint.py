import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import checkpoint
from bertjax.models import bert


def test_save_and_load_pretrained_round_trip(tmp_path):
    cfg = bert.BertConfig.from_dict(bert.model_config("tiny", vocab_size=500))
    ids = jnp.zeros((1, 8), jnp.int32)
    params = bert.BertForPreTraining(cfg).init(jax.random.PRNGKey(0), ids, ids, ids,
                                               ids[:, :2])["params"]
    tok = {"kind": "sentencepiece", "sha256": "abc", "vocab_size": 500}
    checkpoint.save_pretrained(tmp_path / "ckpt", params, cfg, tok, step=7, source="test")
    loaded, cfg2, tok2, meta = checkpoint.load_pretrained(tmp_path / "ckpt")
    assert cfg2 == cfg and tok2 == tok and meta["source"] == "test"
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        checkpoint.save_pretrained(tmp_path / "ckpt", params, cfg, tok)
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 3"):
        checkpoint.load_pretrained(tmp_path / "ckpt", step=3)
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        checkpoint.load_pretrained(tmp_path / "empty")
