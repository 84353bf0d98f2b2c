"""The shared rename/transpose table, without torch or tensorflow."""
import dataclasses

import jax
import numpy as np
import pytest
from flax import traverse_util

from bertjax.convert import table
from bertjax.convert.table import ConversionError
from bertjax.models import bert

CFG = bert.BertConfig(vocab_size=50, hidden_size=16, num_layers=3, num_heads=2,
                      intermediate_size=24, max_position_embeddings=20, type_vocab_size=2,
                      position_embedding="learned")


def _params(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=shape).astype(np.float32)
            for k, shape in table.expected_shapes(cfg).items()}


@pytest.mark.parametrize("layers,positions", [(1, "learned"), (3, "sinusoidal")])
def test_table_covers_exactly_the_model(layers, positions):
    cfg = dataclasses.replace(CFG, num_layers=layers, position_embedding=positions)
    rows = table.entries(layers, positions)
    assert {r.ours for r in rows} == set(table.expected_shapes(cfg))
    for naming in table.NAMINGS:
        names = [r.name(naming) for r in rows]
        assert len(set(names)) == len(names), naming
    # Transposes: every HF dense weight; on Google's side only NSP's output_weights.
    assert {r.ours for r in rows if r.hf_transpose} == {r.ours for r in rows
                                                        if r.ours.endswith("/kernel")}
    assert [r.google for r in rows if r.google_transpose] == ["cls/seq_relationship/output_weights"]


def test_stacking_matches_the_scan_layers_layout():
    flat = _params(CFG)
    scanned_cfg = dataclasses.replace(CFG, scan_layers=True, remat=True)
    ids = np.zeros((1, 4), np.int32)
    scanned = traverse_util.flatten_dict(jax.eval_shape(lambda: bert.BertForPreTraining(
        scanned_cfg).init(jax.random.PRNGKey(0), ids, ids, ids, ids[:, :1])["params"]), sep="/")
    stacked = table.stack_layers(flat, CFG.num_layers)
    assert {k: v.shape for k, v in stacked.items()} == {k: v.shape for k, v in scanned.items()}
    assert table.is_scanned(stacked) and not table.is_scanned(flat)
    back = table.unstack_layers(stacked)
    assert set(back) == set(flat)
    for k in flat:
        np.testing.assert_array_equal(back[k], flat[k])
    with pytest.raises(ConversionError, match=r"have layers \[0, 2\], expected 0..2"):
        table.stack_layers({k: v for k, v in flat.items() if "layer_1/" not in k}, 3)


@pytest.mark.parametrize("naming", table.NAMINGS)
def test_both_directions_invert_each_other(naming):
    flat = _params(CFG, seed=1)
    external = table.from_bertjax(flat, CFG, naming)
    kernel = "bert/encoder/layer_2/intermediate/dense/kernel"
    row = next(r for r in table.entries(3) if r.ours == kernel)
    expected = flat[kernel].T if naming == "hf" else flat[kernel]
    np.testing.assert_array_equal(external[row.name(naming)], expected)
    back, absent = table.to_bertjax(external, CFG, naming, "test")
    assert absent == [] and set(back) == set(flat)
    for k in flat:
        np.testing.assert_array_equal(back[k], flat[k])
    # Scanned params export to the same names and values.
    scanned = table.from_bertjax(table.stack_layers(flat, 3), CFG, naming)
    assert all(np.array_equal(scanned[k], external[k]) for k in external)


def test_optional_groups_and_differences():
    external = table.from_bertjax(_params(CFG), CFG, "hf")
    no_heads = {k: v for k, v in external.items() if not k.startswith(("cls.", "bert.pooler"))}
    flat, absent = table.to_bertjax(no_heads, CFG, "hf", "test")
    assert absent == ["bert/pooler", "cls/predictions", "cls/seq_relationship"]
    assert not any(table.group_of(k) for k in flat)
    broken = dict(external)
    del broken["bert.encoder.layer.2.output.dense.bias"]
    broken["bert.encoder.layer.3.output.dense.bias"] = np.zeros(16, np.float32)
    broken["bert.embeddings.word_embeddings.weight"] = np.zeros((51, 16), np.float32)
    with pytest.raises(ConversionError) as e:
        table.to_bertjax(broken, CFG, "hf", "weights.safetensors")
    msg = str(e.value)
    assert "weights.safetensors does not match a BERT with 3 layers" in msg
    assert "missing (1): bert.encoder.layer.2.output.dense.bias" in msg
    assert "unexpected (1): bert.encoder.layer.3.output.dense.bias" in msg
    assert "bert.embeddings.word_embeddings.weight: shape (51, 16), expected (50, 16)" in msg


def test_sinusoidal_exports_its_table_and_pre_ln_is_refused():
    cfg = dataclasses.replace(CFG, position_embedding="sinusoidal")
    external = table.from_bertjax(_params(cfg), cfg, "hf")
    np.testing.assert_array_equal(external["bert.embeddings.position_embeddings.weight"],
                                  bert.position_table(cfg))
    pre = dataclasses.replace(CFG, pre_layer_norm=True)
    with pytest.raises(ConversionError, match="pre-LN"):
        table.from_bertjax(_params(pre), pre, "hf")
