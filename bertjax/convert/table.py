"""The one rename/transpose table between bertjax, Hugging Face and Google BERT parameters.

Every conversion, in either direction, goes through `entries()`: each row names one bertjax
parameter ('/'-joined path in the BertForPreTraining tree), its Hugging Face state-dict key and
its Google TensorFlow variable name, and says whether the array is transposed on the way.
bertjax and Google store dense kernels [in, out]; torch Linear weights are [out, in].

Keys given to `to_bertjax` must already be canonical for their naming: Hugging Face keys with the
'bert.' prefix and LayerNorm 'weight'/'bias' (hf.py normalises BertModel keys and old
'gamma'/'beta' names), Google names without optimizer slots (google.py drops those).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from bertjax.models import bert

NAMINGS = ("hf", "google")

# Parts of BertForPreTraining that published checkpoints may lack (BertModel without pooler,
# BertForMaskedLM without NSP, ...). An import initialises them fresh and records that.
OPTIONAL_GROUPS = {
    "bert/pooler": "pooler",
    "cls/predictions": "masked-LM head",
    "cls/seq_relationship": "next-sentence head",
}

_SCANNED_PREFIX = "bert/encoder/layer/"


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message lists every difference found."""


@dataclasses.dataclass(frozen=True)
class Entry:
    ours: str               # e.g. 'bert/encoder/layer_0/attention/self/query/kernel'
    hf: str                 # e.g. 'bert.encoder.layer.0.attention.self.query.weight'
    google: str             # e.g. 'bert/encoder/layer_0/attention/self/query/kernel'
    hf_transpose: bool      # torch Linear weight [out, in] vs our kernel [in, out]
    google_transpose: bool  # only NSP's output_weights [2, hidden]

    def name(self, naming: str) -> str:
        return self.hf if naming == "hf" else self.google

    def transpose(self, naming: str) -> bool:
        return self.hf_transpose if naming == "hf" else self.google_transpose


def _dense(ours: str, hf: str, google: str, google_kernel: str = "kernel",
           google_bias: str = "bias", google_transpose: bool = False) -> list[Entry]:
    return [Entry(f"{ours}/kernel", f"{hf}.weight", f"{google}/{google_kernel}", True,
                  google_transpose),
            Entry(f"{ours}/bias", f"{hf}.bias", f"{google}/{google_bias}", False, False)]


def _layer_norm(ours: str, hf: str, google: str) -> list[Entry]:
    return [Entry(f"{ours}/scale", f"{hf}.weight", f"{google}/gamma", False, False),
            Entry(f"{ours}/bias", f"{hf}.bias", f"{google}/beta", False, False)]


def _embedding(name: str) -> Entry:
    return Entry(f"bert/embeddings/{name}/embedding", f"bert.embeddings.{name}.weight",
                 f"bert/embeddings/{name}", False, False)


def entries(num_layers: int, position_embedding: str = "learned") -> list[Entry]:
    """The table for a post-LN BERT with `num_layers` layers (unstacked: layer_0, layer_1, ...).

    With sinusoidal positions bertjax has no position parameter, so that row is left out."""
    rows = [_embedding("word_embeddings")]
    if position_embedding == "learned":
        rows.append(_embedding("position_embeddings"))
    rows.append(_embedding("token_type_embeddings"))
    rows += _layer_norm("bert/embeddings/LayerNorm", "bert.embeddings.LayerNorm",
                        "bert/embeddings/LayerNorm")
    for i in range(num_layers):
        ours, hf, g = f"bert/encoder/layer_{i}", f"bert.encoder.layer.{i}", f"bert/encoder/layer_{i}"
        for proj in ("query", "key", "value"):
            rows += _dense(f"{ours}/attention/self/{proj}", f"{hf}.attention.self.{proj}",
                           f"{g}/attention/self/{proj}")
        for block in ("attention/output", "output"):
            dotted = block.replace("/", ".")
            rows += _dense(f"{ours}/{block}/dense", f"{hf}.{dotted}.dense", f"{g}/{block}/dense")
            rows += _layer_norm(f"{ours}/{block}/LayerNorm", f"{hf}.{dotted}.LayerNorm",
                                f"{g}/{block}/LayerNorm")
        rows += _dense(f"{ours}/intermediate/dense", f"{hf}.intermediate.dense",
                       f"{g}/intermediate/dense")
    rows += _dense("bert/pooler/dense", "bert.pooler.dense", "bert/pooler/dense")
    rows += _dense("cls/predictions/transform/dense", "cls.predictions.transform.dense",
                   "cls/predictions/transform/dense")
    rows += _layer_norm("cls/predictions/transform/LayerNorm",
                        "cls.predictions.transform.LayerNorm",
                        "cls/predictions/transform/LayerNorm")
    # The MLM decoder weight is tied to the word embeddings in all three; only its bias is stored.
    rows.append(Entry("cls/predictions/output_bias", "cls.predictions.bias",
                      "cls/predictions/output_bias", False, False))
    rows += _dense("cls/seq_relationship", "cls.seq_relationship", "cls/seq_relationship",
                   google_kernel="output_weights", google_bias="output_bias",
                   google_transpose=True)
    return rows


def group_of(ours: str) -> str | None:
    """The optional group ('bert/pooler', ...) a parameter belongs to, if any."""
    for prefix in OPTIONAL_GROUPS:
        if ours == prefix or ours.startswith(prefix + "/"):
            return prefix
    return None


# Parameter trees <-> flat {'a/b/c': array} dicts: flax.traverse_util.flatten_dict(tree,
# sep="/") and unflatten_dict(flat, sep="/"), the project's one flatten rule.


def is_scanned(flat: Mapping[str, np.ndarray]) -> bool:
    return any(k.startswith(_SCANNED_PREFIX) for k in flat)


def unstack_layers(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """scan_layers layout (bert/encoder/layer/... stacked on axis 0) -> layer_0, layer_1, ..."""
    out = {}
    for k, v in flat.items():
        if k.startswith(_SCANNED_PREFIX):
            rest = k[len(_SCANNED_PREFIX):]
            for i in range(np.shape(v)[0]):
                out[f"bert/encoder/layer_{i}/{rest}"] = np.asarray(v[i])
        else:
            out[k] = v
    return out


def stack_layers(flat: Mapping[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    """layer_0, layer_1, ... -> the scan_layers layout (stacked on a leading [num_layers] axis)."""
    out, per_layer = {}, {}
    for k, v in flat.items():
        if k.startswith("bert/encoder/layer_"):
            index, rest = k[len("bert/encoder/layer_"):].split("/", 1)
            per_layer.setdefault(rest, {})[int(index)] = v
        else:
            out[k] = v
    for rest, layers in per_layer.items():
        if sorted(layers) != list(range(num_layers)):
            raise ConversionError(f"bert/encoder/layer_*/{rest}: have layers {sorted(layers)}, "
                                  f"expected 0..{num_layers - 1}")
        out[_SCANNED_PREFIX + rest] = np.stack([np.asarray(layers[i]) for i in range(num_layers)])
    return out


def expected_shapes(cfg: bert.BertConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of every BertForPreTraining parameter (unstacked layers), without materialising."""
    cfg = dataclasses.replace(cfg, scan_layers=False, remat=False)
    ids = jnp.zeros((1, 2), jnp.int32)
    shapes = jax.eval_shape(lambda: bert.BertForPreTraining(cfg).init(
        jax.random.PRNGKey(0), ids, ids, ids, ids[:, :1])["params"])
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes, sep="/").items()}


# --- The two directions.

def to_bertjax(tensors: Mapping[str, np.ndarray], cfg: bert.BertConfig, naming: str,
               where: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Canonical external tensors -> (flat float32 bertjax params, optional groups absent).

    Raises ConversionError listing every missing, unexpected or mis-shaped tensor. A whole
    optional group (pooler, MLM head, NSP head) may be absent; the caller initialises it."""
    _check_naming(naming)
    if cfg.pre_layer_norm:
        raise ConversionError("pre-LN models have no BERT checkpoint layout (BERT is post-LN)")
    shapes = expected_shapes(cfg)
    rows = entries(cfg.num_layers, cfg.position_embedding)
    _check_table_covers(rows, shapes)
    by_name = {r.name(naming): r for r in rows}
    present_groups = {group_of(by_name[k].ours) for k in tensors if k in by_name}
    absent_groups = sorted(g for g in OPTIONAL_GROUPS if g not in present_groups)

    missing, shape_errors, out = [], [], {}
    for r in rows:
        name = r.name(naming)
        if name not in tensors:
            if group_of(r.ours) not in absent_groups:
                missing.append(name)
            continue
        value = np.asarray(tensors[name], dtype=np.float32)
        if r.transpose(naming):
            value = value.T
        if value.shape != shapes[r.ours]:
            want = shapes[r.ours][::-1] if r.transpose(naming) else shapes[r.ours]
            shape_errors.append(f"{name}: shape {tuple(np.shape(tensors[name]))}, expected "
                                f"{tuple(want)}")
            continue
        out[r.ours] = np.ascontiguousarray(value)
    unexpected = sorted(set(tensors) - set(by_name))
    _raise_if_differs(where, missing, unexpected, shape_errors, cfg)
    return out, absent_groups


def from_bertjax(flat: Mapping[str, np.ndarray], cfg: bert.BertConfig,
                 naming: str) -> dict[str, np.ndarray]:
    """Flat bertjax params (either layer layout) -> {external name: float32 array}.

    Sinusoidal models get their fixed table as learned position embeddings."""
    _check_naming(naming)
    if cfg.pre_layer_norm:
        raise ConversionError(
            "this model is pre-LN (model.pre_layer_norm=True); Hugging Face/Google BERT is "
            "post-LN and has no final encoder LayerNorm, so it cannot be expressed as BERT")
    flat = unstack_layers(flat) if is_scanned(flat) else dict(flat)
    shapes = expected_shapes(cfg)
    rows = entries(cfg.num_layers, cfg.position_embedding)
    _check_table_covers(rows, shapes)
    missing = sorted(set(shapes) - set(flat))
    unexpected = sorted(set(flat) - set(shapes))
    shape_errors = [f"{k}: shape {tuple(np.shape(flat[k]))}, expected {shapes[k]}"
                    for k in sorted(set(shapes) & set(flat)) if tuple(np.shape(flat[k])) != shapes[k]]
    _raise_if_differs("bertjax parameters", missing, unexpected, shape_errors, cfg)
    out = {}
    for r in rows:
        value = np.asarray(flat[r.ours], dtype=np.float32)
        out[r.name(naming)] = np.ascontiguousarray(value.T if r.transpose(naming) else value)
    if cfg.position_embedding == "sinusoidal":
        table = bert.position_table(cfg)
        out[_embedding("position_embeddings").name(naming)] = table
    return out


def _check_naming(naming: str) -> None:
    if naming not in NAMINGS:
        raise ValueError(f"naming={naming!r}: expected one of {NAMINGS}")


def _check_table_covers(rows: Iterable[Entry], shapes: Mapping[str, tuple]) -> None:
    ours = {r.ours for r in rows}
    if ours != set(shapes):  # a model change the table has not followed: a bug, not bad input
        raise AssertionError(f"conversion table out of date: model-only {sorted(set(shapes) - ours)}, "
                             f"table-only {sorted(ours - set(shapes))}")


def _raise_if_differs(where, missing, unexpected, shape_errors, cfg) -> None:
    if not (missing or unexpected or shape_errors):
        return
    lines = [f"{where} does not match a BERT with {cfg.num_layers} layers, hidden "
             f"{cfg.hidden_size}, intermediate {cfg.intermediate_size}, vocab {cfg.vocab_size}, "
             f"{cfg.max_position_embeddings} positions, {cfg.type_vocab_size} segments:"]
    for title, items in (("missing", missing), ("unexpected", unexpected),
                         ("shape mismatch", shape_errors)):
        if items:
            shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
            lines.append(f"  {title} ({len(items)}): " + ", ".join(shown))
    raise ConversionError("\n".join(lines))


_REQUIRED_JSON_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                       "intermediate_size")


def missing_config_keys(d: Mapping) -> list[str]:
    return [k for k in _REQUIRED_JSON_KEYS if k not in d]


def config_from_bert_json(d: Mapping, hidden_act: str, where: str, *, type_vocab_default: int,
                          layer_norm_eps: float) -> bert.BertConfig:
    """A BERT config.json / bert_config.json (same key names in HF and Google) -> BertConfig.

    The caller has checked the required keys and mapped the activation name."""
    layers, hidden, heads = d["num_hidden_layers"], d["hidden_size"], d["num_attention_heads"]
    size = next((name for name, shape in bert.SIZES.items()
                 if shape == (layers, hidden, heads) and d["intermediate_size"] == 4 * hidden), "")
    try:
        return bert.BertConfig(
            vocab_size=d["vocab_size"], hidden_size=hidden, num_layers=layers, num_heads=heads,
            intermediate_size=d["intermediate_size"],
            max_position_embeddings=d.get("max_position_embeddings", 512),
            type_vocab_size=d.get("type_vocab_size", type_vocab_default),
            position_embedding="learned", hidden_act=hidden_act, pre_layer_norm=False,
            layer_norm_eps=layer_norm_eps,
            hidden_dropout_rate=float(d.get("hidden_dropout_prob", 0.1)),
            attention_dropout_rate=float(d.get("attention_probs_dropout_prob", 0.1)),
            initializer_range=float(d.get("initializer_range", 0.02)), size=size)
    except ValueError as e:
        raise ConversionError(f"{where}: {e}") from e
