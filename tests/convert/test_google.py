"""Google TF checkpoints: the name table through a dict-backed reader (no tensorflow needed),
and, where tensorflow is installed, a real TF checkpoint end to end."""
import json
import pathlib
import re

import numpy as np
import pytest

from bertjax import checkpoint
from bertjax.convert import google
from bertjax.convert.table import ConversionError

pytestmark = pytest.mark.interop
TOL = 1e-4


def google_names(state_dict):
    """HF BertForPreTraining tensors under the variable names of Google's modeling.py and
    run_pretraining.py (written out independently of bertjax.convert.table)."""
    out = {}
    for key, value in state_dict.items():
        value = value.numpy()
        if key.startswith("cls.predictions.decoder"):
            continue  # tied; Google stores only cls/predictions/output_bias
        name = re.sub(r"layer\.(\d+)", r"layer_\1", key).replace(".", "/")
        if name.endswith("LayerNorm/weight"):
            name = name[:-len("weight")] + "gamma"
        elif name.endswith("LayerNorm/bias"):
            name = name[:-len("bias")] + "beta"
        elif name.startswith("cls/seq_relationship/"):
            name = "cls/seq_relationship/output_" + ("weights" if name.endswith("weight")
                                                     else "bias")
        elif name == "cls/predictions/bias":
            name = "cls/predictions/output_bias"
        elif "embeddings/" in name and name.endswith("_embeddings/weight"):
            name = name[:-len("/weight")]
        elif name.endswith("/weight"):
            name, value = name[:-len("weight")] + "kernel", value.T
        out[name] = np.ascontiguousarray(value)
    return out


def google_config(hf_model):
    c = hf_model.config
    return {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "hidden_size": c.hidden_size, "initializer_range": 0.02,
            "intermediate_size": c.intermediate_size,
            "max_position_embeddings": c.max_position_embeddings,
            "num_attention_heads": c.num_attention_heads,
            "num_hidden_layers": c.num_hidden_layers, "type_vocab_size": c.type_vocab_size,
            "vocab_size": c.vocab_size}


@pytest.fixture(scope="module")
def release(tmp_path_factory, hf_tools):
    """A Google-style release directory from a random HF model with tanh GELU (Google's 'gelu')."""
    d = tmp_path_factory.mktemp("gdir") / "uncased_L-2_H-32_A-4"
    d.mkdir()
    model = hf_tools["make_hf"](tmp_path_factory.mktemp("hf"), hidden_act="gelu_new", seed=5)
    variables = google_names(model.state_dict())
    (d / "bert_config.json").write_text(json.dumps(google_config(model)))
    hf_tools["write_vocab"](d / "vocab.txt")
    return d, model, variables


def _with_slots(variables):
    # Pretraining checkpoints also hold AdamWeightDecay slots and the step: never imported.
    slots = {f"{k}/adam_{m}": np.zeros_like(v) + 7 for k, v in variables.items() for m in "mv"}
    return {**variables, **slots, "global_step": np.array(1000, np.int64)}


def test_import_through_name_table_matches_transformers(release, hf_tools, tmp_path):
    d, model, variables = release
    (d / "bert_model.ckpt.index").touch()  # the dict reader below stands in for tensorflow
    seen = []
    reader = lambda prefix: seen.append(prefix) or _with_slots(variables)  # noqa: E731
    google.import_checkpoint(d, tmp_path / "out", reader=reader)
    assert seen == [d / "bert_model.ckpt"]
    params, cfg, tok, meta = checkpoint.load_pretrained(tmp_path / "out")
    assert cfg.hidden_act == "gelu_tanh" and cfg.position_embedding == "learned"
    assert meta["conversion"]["from"] == "google" and meta["conversion"]["initialised"] == []
    assert tok["do_lower_case"] is True  # from the directory name
    inputs = hf_tools["batch"](3)
    diffs = hf_tools["max_diffs"](hf_tools["our_outputs"](params, cfg, *inputs),
                                  hf_tools["hf_outputs"](model, *inputs))
    print(f"google import parity (dict reader) max abs diff: {diffs}")
    assert max(diffs.values()) < TOL, diffs


@pytest.mark.parametrize("edit,expected", [
    (lambda v: v.pop("bert/encoder/layer_1/output/LayerNorm/gamma"),
     r"missing \(1\): bert/encoder/layer_1/output/LayerNorm/gamma"),
    (lambda v: v.update({"output_weights": np.zeros((3, 32), np.float32)}),
     r"unexpected \(1\): output_weights"),
    (lambda v: v.update({"cls/seq_relationship/output_weights": np.zeros((32, 2), np.float32)}),
     r"cls/seq_relationship/output_weights: shape \(32, 2\), expected \(2, 32\)"),
])
def test_bad_variables(release, tmp_path, edit, expected):
    d, _, variables = release
    (d / "bert_model.ckpt.index").touch()
    variables = dict(variables)
    edit(variables)
    with pytest.raises(ConversionError, match=expected):
        google.import_checkpoint(d, tmp_path / "out", reader=lambda prefix: variables)
    assert not (tmp_path / "out").exists()


def test_config_and_names():
    base = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
            "type_vocab_size": 2, "max_position_embeddings": 512}
    cfg = google.config_from_google(base)
    assert (cfg.size, cfg.hidden_act, cfg.layer_norm_eps) == ("base", "gelu_tanh", 1e-12)
    with pytest.raises(ConversionError, match="hidden_act='relu'"):
        google.config_from_google({**base, "hidden_act": "relu"})
    with pytest.raises(ConversionError, match=r"missing keys \['vocab_size'\]"):
        google.config_from_google({k: v for k, v in base.items() if k != "vocab_size"})
    assert google.lower_case_from_name(pathlib.Path("wwm_uncased_L-24_H-1024_A-16")) is True
    assert google.lower_case_from_name(pathlib.Path("multi_cased_L-12_H-768_A-12")) is False
    assert google.lower_case_from_name(pathlib.Path("my_model")) is None


def test_real_tensorflow_checkpoint(release, hf_tools, tmp_path):
    tf = pytest.importorskip("tensorflow", reason="needs tensorflow (pip install 'bertjax[tf]')")
    _, model, variables = release
    d = tmp_path / "cased_L-2_H-32_A-4"
    d.mkdir()
    for name in ("bert_config.json", "vocab.txt"):
        (d / name).write_bytes((release[0] / name).read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        for name, value in _with_slots(variables).items():
            tf.compat.v1.get_variable(name, initializer=tf.constant(value))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(d / "bert_model.ckpt"))
    google.import_checkpoint(d, tmp_path / "out")
    params, cfg, tok, _ = checkpoint.load_pretrained(tmp_path / "out")
    assert tok["do_lower_case"] is False  # cased_* directory
    inputs = hf_tools["batch"](4)
    diffs = hf_tools["max_diffs"](hf_tools["our_outputs"](params, cfg, *inputs),
                                  hf_tools["hf_outputs"](model, *inputs))
    print(f"google import parity (real TF checkpoint) max abs diff: {diffs}")
    assert max(diffs.values()) < TOL, diffs
