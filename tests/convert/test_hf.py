"""Hugging Face interop: import parity, export parity, round trips, bad input."""
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from flax import traverse_util

from bertjax import checkpoint
from bertjax.convert import hf, table
from bertjax.convert.table import ConversionError
from bertjax.data import wordpiece
from bertjax.models import bert

pytestmark = pytest.mark.interop
TOL = 1e-4


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, hf_tools):
    d = tmp_path_factory.mktemp("hf_pretraining")
    model = hf_tools["make_hf"](d)
    return d, model


def _leftovers(parent, name):
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.partial")]


@pytest.mark.parametrize("scan_layers", [False, True])
def test_import_matches_transformers(hf_dir, hf_tools, tmp_path, scan_layers):
    src, model = hf_dir
    hf.import_checkpoint(src, tmp_path / "out", scan_layers=scan_layers)
    params, cfg, tok, meta = checkpoint.load_pretrained(tmp_path / "out")
    assert cfg.position_embedding == "learned" and not cfg.pre_layer_norm
    assert cfg.scan_layers == scan_layers
    assert ("layer" in params["bert"]["encoder"]) == scan_layers
    assert (cfg.num_layers, cfg.hidden_size, cfg.type_vocab_size, cfg.max_position_embeddings,
            cfg.hidden_act) == (2, 32, 3, 40, "gelu")
    assert meta["conversion"]["initialised"] == []
    assert tok["kind"] == "wordpiece" and (tok["cls_id"], tok["mask_id"]) == (101, 103)
    assert wordpiece.load(tmp_path / "out").identity() == tok

    inputs = hf_tools["batch"]()
    ours = hf_tools["our_outputs"](params, cfg, *inputs)
    theirs = hf_tools["hf_outputs"](model, *inputs)
    diffs = hf_tools["max_diffs"](ours, theirs)
    print(f"import parity (scan_layers={scan_layers}) max abs diff: {diffs}")
    assert max(diffs.values()) < TOL, diffs

    # The comparison can fail: swapping query and key kernels in one layer is far outside it.
    flat = traverse_util.flatten_dict(params, sep="/")
    prefix = "bert/encoder/layer/" if scan_layers else "bert/encoder/layer_0/"
    q, k = (prefix + f"attention/self/{n}/kernel" for n in ("query", "key"))
    flat[q], flat[k] = flat[k], flat[q]
    wrong = hf_tools["our_outputs"](traverse_util.unflatten_dict(flat, sep="/"), cfg, *inputs)
    assert hf_tools["max_diffs"](wrong, theirs)["sequence"] > 100 * TOL


@pytest.mark.parametrize("cls_name,absent", [
    ("BertForMaskedLM", ["bert/pooler", "cls/seq_relationship"]),
    ("BertModelNoPooler", ["bert/pooler", "cls/predictions", "cls/seq_relationship"]),
    ("BertModel", ["cls/predictions", "cls/seq_relationship"]),
])
def test_import_partial_architectures(hf_tools, tmp_path, cls_name, absent):
    import torch
    src = tmp_path / "src"
    model = hf_tools["make_hf"](src, cls_name=cls_name, seed=1)
    hf.import_checkpoint(src, tmp_path / "out", seed=3)
    params, cfg, _, meta = checkpoint.load_pretrained(tmp_path / "out")
    assert meta["conversion"]["initialised"] == absent
    assert set(traverse_util.flatten_dict(params, sep="/")) == set(table.expected_shapes(cfg))
    ids, segments, mask, positions = hf_tools["batch"](1)
    seq, _, mlm, _ = hf_tools["our_outputs"](params, cfg, ids, segments, mask, positions)
    t = lambda a: torch.tensor(np.asarray(a))  # noqa: E731
    with torch.no_grad():
        out = model(input_ids=t(ids), token_type_ids=t(segments), attention_mask=t(mask))
    if cls_name == "BertForMaskedLM":
        theirs = np.take_along_axis(out.logits.numpy(), positions[..., None], axis=1)
        assert np.abs(mlm - theirs).max() < TOL
    else:
        assert np.abs(seq - out.last_hidden_state.numpy()).max() < TOL
    # Fresh parts are initialised as in pretraining (not zeros), reproducibly from the seed.
    pooler = params["bert"]["pooler"]["dense"]["kernel"]
    if "bert/pooler" in absent:
        assert 0.005 < float(np.std(pooler)) < 0.05
        hf.import_checkpoint(src, tmp_path / "again", seed=3)
        again, *_ = checkpoint.load_pretrained(tmp_path / "again")
        np.testing.assert_array_equal(again["bert"]["pooler"]["dense"]["kernel"], pooler)


def _bertjax_checkpoint(path, vocab_dir, hf_tools, seed=0, **model):
    """A random bertjax model (biases and LayerNorms too) saved with a WordPiece identity."""
    model = {"position_embedding": "learned", **model}
    cfg = bert.BertConfig(vocab_size=160, hidden_size=32, num_layers=2, num_heads=4,
                          intermediate_size=48, max_position_embeddings=40, type_vocab_size=2,
                          **model)
    params = hf_tools["random_params"](cfg, seed)
    tok = wordpiece.load(hf_tools["write_vocab"](vocab_dir / "vocab.txt"), do_lower_case=True)
    checkpoint.save_pretrained(path, params, cfg, tok.identity(), source="test")
    return params, cfg, tok


@pytest.mark.parametrize("model", [
    dict(position_embedding="learned", hidden_act="gelu"),
    dict(position_embedding="sinusoidal", hidden_act="gelu_tanh"),
    dict(position_embedding="learned", hidden_act="gelu", scan_layers=True),
])
def test_export_loads_in_transformers_and_matches(hf_tools, tmp_path, model):
    import transformers
    params, cfg, tok = _bertjax_checkpoint(tmp_path / "ckpt", tmp_path, hf_tools, **model)
    hf.export_checkpoint(tmp_path / "ckpt", tmp_path / "hf", tokenizer=tmp_path)
    loaded, info = transformers.BertForPreTraining.from_pretrained(
        tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert loaded.config.hidden_act == {"gelu": "gelu", "gelu_tanh": "gelu_new"}[cfg.hidden_act]
    if cfg.position_embedding == "sinusoidal":
        np.testing.assert_array_equal(
            loaded.bert.embeddings.position_embeddings.weight.detach().numpy(),
            bert.position_table(cfg))
    inputs = hf_tools["batch"](2, types=2)
    diffs = hf_tools["max_diffs"](hf_tools["our_outputs"](params, cfg, *inputs),
                                  hf_tools["hf_outputs"](loaded.eval(), *inputs))
    print(f"export parity ({model}) max abs diff: {diffs}")
    assert max(diffs.values()) < TOL, diffs

    # The exported tokenizer tokenizes as ours does.
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "Hello, world! The runner is unable."
    assert hf_tok(text)["input_ids"] == [tok.cls_id, *tok.encode(text), tok.sep_id]
    assert tok.encode(text).count(tok.unk_id) == 0


def test_import_export_round_trips_exactly(hf_dir, hf_tools, tmp_path):
    from safetensors.numpy import load_file
    src, _ = hf_dir
    hf.import_checkpoint(src, tmp_path / "imported")
    hf.export_checkpoint(tmp_path / "imported", tmp_path / "exported")
    original, again = load_file(src / "model.safetensors"), load_file(
        tmp_path / "exported" / "model.safetensors")
    assert set(original) == set(again)
    for k in original:
        np.testing.assert_array_equal(original[k], again[k], err_msg=k)
    c1 = json.loads((src / "config.json").read_text())
    c2 = json.loads((tmp_path / "exported" / "config.json").read_text())
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "hidden_act", "max_position_embeddings", "type_vocab_size",
                "layer_norm_eps", "hidden_dropout_prob", "attention_probs_dropout_prob"):
        assert c1[key] == c2[key], key
    assert (src / "vocab.txt").read_bytes() == (tmp_path / "exported" / "vocab.txt").read_bytes()

    # ... and bertjax -> HF -> bertjax (both layer layouts; sinusoidal comes back learned,
    # holding its table).
    for scan, pe in ((False, "learned"), (True, "learned"), (False, "sinusoidal")):
        name = f"{pe}{scan}"
        params, cfg, _ = _bertjax_checkpoint(tmp_path / f"ckpt{name}", tmp_path, hf_tools,
                                             scan_layers=scan, position_embedding=pe, seed=4)
        hf.export_checkpoint(tmp_path / f"ckpt{name}", tmp_path / f"hf{name}", tokenizer=tmp_path)
        hf.import_checkpoint(tmp_path / f"hf{name}", tmp_path / f"back{name}", scan_layers=scan)
        back, cfg2, _, _ = checkpoint.load_pretrained(tmp_path / f"back{name}")
        assert cfg2 == dataclasses.replace(cfg, position_embedding="learned")
        a, b = traverse_util.flatten_dict(params, sep="/"), traverse_util.flatten_dict(back, sep="/")
        if pe == "sinusoidal":
            a["bert/embeddings/position_embeddings/embedding"] = bert.position_table(cfg)
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_pytorch_bin_with_old_names_and_tied_decoder(hf_dir, tmp_path):
    import torch
    src, model = hf_dir
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                     "LayerNorm.beta"): v
             for k, v in model.state_dict().items()}
    assert "cls.predictions.decoder.weight" in state  # tied copy present, as in v4 .bin files
    state["bert.embeddings.position_ids"] = torch.arange(40)[None]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    torch.save(state, bin_dir / "pytorch_model.bin")
    for name in ("config.json", "vocab.txt"):
        (bin_dir / name).write_bytes((src / name).read_bytes())
    a, *_ = hf.load(src)
    b, *_ = hf.load(bin_dir)
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1
    torch.save(state, bin_dir / "pytorch_model.bin")
    with pytest.raises(ConversionError, match="decoder.weight differs"):
        hf.import_checkpoint(bin_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _edited_copy(src, dst, edit):
    from safetensors.numpy import load_file, save_file
    dst.mkdir()
    tensors = load_file(src / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    for name in ("config.json", "vocab.txt"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


@pytest.mark.parametrize("edit,expected", [
    (lambda t: t.pop("bert.encoder.layer.1.attention.self.key.bias"),
     r"missing \(1\): bert.encoder.layer.1.attention.self.key.bias"),
    (lambda t: t.update({"classifier.weight": np.zeros((2, 32), np.float32)}),
     r"unexpected \(1\): classifier.weight"),
    (lambda t: t.update({"bert.encoder.layer.0.intermediate.dense.weight":
                         np.zeros((36, 32), np.float32)}),
     r"bert.encoder.layer.0.intermediate.dense.weight: shape \(36, 32\), expected \(37, 32\)"),
    (lambda t: t.pop("cls.seq_relationship.bias"),
     r"missing \(1\): cls.seq_relationship.bias"),  # half a head is an error, not a fresh init
])
def test_bad_weights_are_reported_and_nothing_is_written(hf_dir, tmp_path, edit, expected):
    src = _edited_copy(hf_dir[0], tmp_path / "bad", edit)
    with pytest.raises(ConversionError, match=expected):
        hf.import_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path, "out")


@pytest.mark.parametrize("config,expected", [
    ({"model_type": "roberta", "architectures": ["RobertaForMaskedLM"]}, "model_type='roberta'"),
    ({"model_type": "albert", "architectures": ["AlbertForPreTraining"]}, "model_type='albert'"),
    ({"model_type": "distilbert", "architectures": ["DistilBertForMaskedLM"]},
     "model_type='distilbert'"),
    ({"architectures": ["BertForSequenceClassification"]},
     r"architectures \['BertForSequenceClassification'\] are not supported"),
    ({"hidden_act": "relu"}, "hidden_act='relu' is not supported"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key'"),
])
def test_unsupported_configs(hf_dir, tmp_path, config, expected):
    src = tmp_path / "src"
    src.mkdir()
    base = json.loads((hf_dir[0] / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**base, **config}))
    with pytest.raises(ConversionError, match=expected):
        hf.import_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path, "out")


def test_export_refusals(hf_tools, tmp_path):
    _bertjax_checkpoint(tmp_path / "preln", tmp_path, hf_tools, pre_layer_norm=True)
    with pytest.raises(ConversionError, match="pre-LN"):
        hf.export_checkpoint(tmp_path / "preln", tmp_path / "out")
    assert not (tmp_path / "out").exists()

    params, cfg, tok = _bertjax_checkpoint(tmp_path / "ok", tmp_path, hf_tools)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        hf.export_checkpoint(tmp_path / "ok", tmp_path / "taken")
    other = tmp_path / "other"
    other.mkdir()
    hf_tools["write_vocab"](other / "vocab.txt", words=["different"])
    with pytest.raises(ConversionError, match="not the tokenizer this checkpoint"):
        hf.export_checkpoint(tmp_path / "ok", tmp_path / "out", tokenizer=other)
    sp = dict(kind="sentencepiece", path="enwiki.model", sha256="0" * 64, vocab_size=160)
    checkpoint.save_pretrained(tmp_path / "sp", params, cfg, sp)
    with pytest.raises(FileNotFoundError, match="enwiki.model' was not found.*--skip_tokenizer"):
        hf.export_checkpoint(tmp_path / "sp", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path, "out")
    hf.export_checkpoint(tmp_path / "sp", tmp_path / "out", skip_tokenizer=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json",
                                                                    "model.safetensors"]


def _train_sentencepiece(directory, model_type):
    """A tiny model trained as bertjax trains its tokenizers ([PAD]=0 [UNK]=1, control
    [CLS]/[SEP]/[MASK], NFKC)."""
    import sentencepiece as spm
    rng = np.random.default_rng(0)
    words = ("the quick brown fox jumps over lazy dog café naïve résumé straße numbers and "
             "3.14 1,000 中文 running runner unable able").split()
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words, rng.integers(3, 12)))
                                for _ in range(2000)), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(directory / model_type), model_type=model_type,
        vocab_size=60, character_coverage=1.0, normalization_rule_name="nmt_nfkc", pad_id=0,
        pad_piece="[PAD]", unk_id=1, unk_piece="[UNK]", bos_id=-1, eos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"], minloglevel=2)
    return directory / f"{model_type}.model"


def test_export_with_sentencepiece_tokenizer(hf_tools, tmp_path):
    import hashlib

    import sentencepiece as spm
    import transformers
    model_file = _train_sentencepiece(tmp_path, "unigram")
    cfg = bert.BertConfig(vocab_size=60, hidden_size=16, num_layers=1, num_heads=2,
                          intermediate_size=32, max_position_embeddings=32)
    ident = dict(kind="sentencepiece", path=model_file.name, vocab_size=60, pad_id=0,
                 sha256=hashlib.sha256(model_file.read_bytes()).hexdigest())
    run_config = {"data": {"tokenizer": str(model_file)}}  # as a pretraining run records it
    checkpoint.save_pretrained(tmp_path / "ckpt", hf_tools["random_params"](cfg), cfg, ident,
                               extra={"config": run_config})
    hf.export_checkpoint(tmp_path / "ckpt", tmp_path / "hf")
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in
                                                          (tmp_path / "hf").iterdir()}
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    for text in ["The quick  brown fox, naïve café!", "中文 runner 3.14", " ﬁ ½ "]:
        assert hf_tok(text)["input_ids"] == [2, *sp.encode(text), 3], text
    pair = hf_tok("a b", "c")
    assert pair["input_ids"] == [2, *sp.encode("a b"), 3, *sp.encode("c"), 3]
    assert pair["token_type_ids"] == [0] * (len(sp.encode("a b")) + 2) + [1] * (
        len(sp.encode("c")) + 1)

    # The built-in check refuses a disagreement: a literal "[MASK]" is the special token in
    # transformers but plain text for SentencePiece (the one intended difference).
    from bertjax.convert import hf_tokenizer
    with pytest.raises(ConversionError, match="disagrees with SentencePiece on 'a \\[MASK\\]'"):
        hf_tokenizer.convert(model_file.read_bytes(), "m", samples=["a [MASK]"])

    bpe = _train_sentencepiece(tmp_path, "bpe")
    ident = {**ident, "path": bpe.name, "sha256": hashlib.sha256(bpe.read_bytes()).hexdigest()}
    checkpoint.save_pretrained(tmp_path / "bpe_ckpt", hf_tools["random_params"](cfg), cfg, ident)
    with pytest.raises(ConversionError, match="only unigram SentencePiece"):
        hf.export_checkpoint(tmp_path / "bpe_ckpt", tmp_path / "out", tokenizer=bpe)
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path, "out")


@pytest.mark.slow
def test_convert_checkpoint_script(hf_dir, tmp_path):
    src = hf_dir[0]
    repo = pathlib.Path(checkpoint.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, str(repo / "scripts" / "convert_checkpoint.py"), *args],
        capture_output=True, text=True, timeout=300, env=env)
    r = run("--from=hf", f"--src={src}", f"--out={tmp_path / 'imp'}", "--do_lower_case=false")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run("--to=hf", f"--src={tmp_path / 'imp'}", f"--out={tmp_path / 'exp'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "exp" / "tokenizer_config.json").read_text())[
        "do_lower_case"] is False
    r = run("--from=hf", "--to=hf", f"--src={src}", f"--out={tmp_path / 'x'}")
    assert r.returncode != 0 and "exactly one of" in r.stderr
