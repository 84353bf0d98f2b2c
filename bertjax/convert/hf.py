"""Hugging Face BERT directories <-> bertjax checkpoints.

Import reads `config.json`, the weights (`model.safetensors`, `pytorch_model.bin`, or their
sharded `*.index.json` forms) and `vocab.txt` of a BertModel, BertForPreTraining or
BertForMaskedLM. Parts the source lacks (BertModel: pooler and both heads, or no pooler with
add_pooling_layer=False; BertForMaskedLM: pooler and NSP head) are initialised fresh; the log and
the checkpoint metadata ('conversion' -> 'initialised') say which.

Export writes `config.json`, `model.safetensors` (float32) and the WordPiece tokenizer files of a
bertjax checkpoint so that `transformers.BertForPreTraining.from_pretrained` loads it. Only
safetensors is needed for both directions; torch only to read `pytorch_model.bin` files.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from bertjax import checkpoint
from bertjax.convert import output, table
from bertjax.convert.table import ConversionError
from bertjax.data import wordpiece
from bertjax.models import bert

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"
INDEX_SUFFIX = ".index.json"
ARCHITECTURES = ("BertModel", "BertForPreTraining", "BertForMaskedLM")
# HF hidden_act -> ours. 'gelu' in transformers is the exact (erf) GELU.
ACTIVATIONS = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh",
               "gelu_pytorch_tanh": "gelu_tanh"}
EXPORT_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
_BERT_MODEL_ROOTS = ("embeddings.", "encoder.", "pooler.")   # BertModel keys have no 'bert.'
_BUFFERS = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")
_DECODER_WEIGHT = "cls.predictions.decoder.weight"
_DECODER_BIAS = "cls.predictions.decoder.bias"
_MLM_BIAS = "cls.predictions.bias"
_WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"


# --- Config.

def config_from_hf(d: Mapping[str, Any], where: str = CONFIG_FILE) -> bert.BertConfig:
    """A transformers BertConfig dict -> our BertConfig (learned positions, post-LN)."""
    model_type = d.get("model_type")
    architectures = list(d.get("architectures") or [])
    if model_type != "bert":
        raise ConversionError(
            f"{where}: model_type={model_type!r} (architectures {architectures}) is not "
            f"supported; only BERT (model_type 'bert': {', '.join(ARCHITECTURES)}) converts. "
            "RoBERTa, ALBERT, DistilBERT, ... differ in embeddings, sharing or layout.")
    others = [a for a in architectures if a not in ARCHITECTURES]
    if architectures and not set(architectures) & set(ARCHITECTURES):
        raise ConversionError(f"{where}: architectures {others} are not supported; expected one "
                              f"of {list(ARCHITECTURES)} (task heads have no bertjax layout)")
    problems = []
    missing = table.missing_config_keys(d)
    if missing:
        problems.append(f"missing keys {missing}")
    act = d.get("hidden_act", "gelu")
    if not isinstance(act, str) or act not in ACTIVATIONS:
        problems.append(f"hidden_act={act!r} is not supported; expected one of "
                        f"{sorted(ACTIVATIONS)}")
    pos = d.get("position_embedding_type", "absolute")
    if pos != "absolute":
        problems.append(f"position_embedding_type={pos!r}; only 'absolute' (learned) positions "
                        "convert")
    for key in ("is_decoder", "add_cross_attention"):
        if d.get(key):
            problems.append(f"{key}=true; only the bidirectional encoder converts")
    if problems:
        raise ConversionError(f"{where}: " + "; ".join(problems))
    return table.config_from_bert_json(d, ACTIVATIONS[act], where, type_vocab_default=2,
                                       layer_norm_eps=float(d.get("layer_norm_eps", 1e-12)))


def config_to_hf(cfg: bert.BertConfig, pad_token_id: int = 0) -> dict:
    """Our BertConfig -> config.json for transformers' BertForPreTraining."""
    if cfg.causal:
        raise ConversionError(
            "this model has causal attention (model.causal=True, objective='ltr'); Hugging Face "
            "BertForPreTraining is bidirectional, so the export would silently drop the mask")
    if cfg.pre_layer_norm:
        raise ConversionError(
            "this model is pre-LN (model.pre_layer_norm=True); Hugging Face BERT is post-LN "
            "(no final encoder LayerNorm), so it cannot be exported as BERT")
    return {
        "architectures": ["BertForPreTraining"],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": EXPORT_ACTIVATIONS[cfg.hidden_act],
        "hidden_dropout_prob": cfg.hidden_dropout_rate,
        "attention_probs_dropout_prob": cfg.attention_dropout_rate,
        # Sinusoidal models export their fixed table here, so they load as learned positions.
        "max_position_embeddings": cfg.max_position_embeddings,
        "position_embedding_type": "absolute",
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": int(pad_token_id),
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


# --- Weights.

def read_weights(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a HF model directory as float32 numpy arrays, keyed as stored."""
    directory = pathlib.Path(directory)
    for name, reader in ((SAFETENSORS_FILE, _read_safetensors), (TORCH_FILE, _read_torch)):
        if (directory / name).is_file():
            return reader(directory / name)
        index = directory / (name + INDEX_SUFFIX)
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            tensors = {}
            for shard in shards:
                tensors.update(reader(directory / shard))
            return tensors
    raise FileNotFoundError(f"{directory} holds no {SAFETENSORS_FILE} or {TORCH_FILE} "
                            f"(nor a sharded {INDEX_SUFFIX} index)")


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open  # numpy framework: bfloat16 arrives as ml_dtypes' type
    with safe_open(str(path), framework="numpy") as f:
        return {k: np.asarray(f.get_tensor(k), np.float32) for k in f.keys()}


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"reading {path} needs torch (pip install 'bertjax[interop]'); "
                          "a model.safetensors file needs only safetensors") from e
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items() if hasattr(v, "float")}


def canonical_keys(tensors: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """HF keys of any of the three architectures -> the BertForPreTraining names of the table.

    Adds BertModel's missing 'bert.' prefix, renames old LayerNorm gamma/beta, drops the
    position/token-type id buffers and the MLM decoder, which must be tied to the embeddings."""
    out = {}
    for k, v in tensors.items():
        if k.startswith(_BERT_MODEL_ROOTS):
            k = "bert." + k
        if k.endswith(("LayerNorm.gamma", "LayerNorm.beta")):
            k = k[:-len("gamma")] + "weight" if k.endswith("gamma") else k[:-len("beta")] + "bias"
        if k in _BUFFERS:
            continue
        out[k] = v
    if _DECODER_WEIGHT in out:
        decoder = out.pop(_DECODER_WEIGHT)
        embeddings = out.get(_WORD_EMBEDDINGS)
        if embeddings is not None and (decoder.shape != embeddings.shape
                                       or not np.array_equal(decoder, embeddings)):
            raise ConversionError(
                f"{where}: {_DECODER_WEIGHT} differs from {_WORD_EMBEDDINGS}; bertjax ties the "
                "MLM decoder to the word embeddings, so an untied decoder cannot be imported")
    if _DECODER_BIAS in out:
        decoder_bias = out.pop(_DECODER_BIAS)
        if _MLM_BIAS not in out:
            out[_MLM_BIAS] = decoder_bias
        elif not np.array_equal(out[_MLM_BIAS], decoder_bias):
            raise ConversionError(f"{where}: {_DECODER_BIAS} differs from {_MLM_BIAS}; they are "
                                  "one tied parameter in BERT")
    return out


def load(src: str | os.PathLike) -> tuple[dict[str, np.ndarray], bert.BertConfig, list[str],
                                          dict]:
    """A HF directory -> (flat bertjax params, config, absent optional groups, config.json)."""
    src = pathlib.Path(src)
    config_file = src / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found; expected a Hugging Face BERT "
                                "directory (config.json + model.safetensors + vocab.txt)")
    try:
        hf_config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{config_file}: not a JSON config ({e}); expected a Hugging Face "
                              "config.json") from None
    if not isinstance(hf_config, dict):
        raise ConversionError(f"{config_file}: holds a {type(hf_config).__name__}; expected a "
                              "Hugging Face config (a JSON object)")
    cfg = config_from_hf(hf_config, str(config_file))
    weights_where = f"the weights in {src}"
    tensors = canonical_keys(read_weights(src), weights_where)
    flat, absent = table.to_bertjax(tensors, cfg, "hf", weights_where)
    return flat, cfg, absent, hf_config


def import_checkpoint(src: str | os.PathLike, out: str | os.PathLike, *,
                      scan_layers: bool = False, seed: int = 0,
                      do_lower_case: bool | None = None) -> pathlib.Path:
    """HF directory -> bertjax checkpoint at `out` (see output.write_imported for the layout)."""
    src = pathlib.Path(src)
    output.check_free(out)
    flat, cfg, absent, hf_config = load(src)
    tok = wordpiece.WordPieceTokenizer(src, do_lower_case)
    output.check_tokenizer(tok, cfg, str(src))
    if tok.lower_case_inferred:
        log.warning("%s has no tokenizer_config.json with do_lower_case; inferred "
                    "do_lower_case=%s from the vocabulary", src, tok.do_lower_case)
    flat = output.fill_missing_groups(flat, cfg, absent, seed)
    if scan_layers:
        cfg = bert.BertConfig.from_dict({**cfg.to_dict(), "scan_layers": True})
    conversion = {"from": "huggingface", "src": str(src.resolve()),
                  "architectures": list(hf_config.get("architectures") or []),
                  "initialised": absent, "seed": seed,
                  "transformers_version": hf_config.get("transformers_version", "")}
    return output.write_imported(out, flat, cfg, tok, source=f"huggingface:{src.resolve()}",
                                 conversion=conversion)


# --- Export.

def export_checkpoint(src: str | os.PathLike, out: str | os.PathLike, *,
                      tokenizer: str | os.PathLike | None = None, step: int | None = None,
                      skip_tokenizer: bool = False) -> pathlib.Path:
    """bertjax checkpoint -> HF directory (config.json, model.safetensors, tokenizer files).

    The tokenizer must be the one the checkpoint records (same sha256). It is looked for at
    `tokenizer`, else where a pretraining run's config says (data.tokenizer), else in the
    checkpoint directory (imported checkpoints keep vocab.txt there). WordPiece exports as
    vocab.txt, unigram SentencePiece as tokenizer.json (hf_tokenizer.py). skip_tokenizer=True
    exports the weights alone."""
    from safetensors.numpy import save_file

    output.check_free(out)
    params, cfg, tok_identity, meta = checkpoint.load_pretrained(src, step)
    hf_config = config_to_hf(cfg, tok_identity.get("pad_id", 0))
    tensors = table.from_bertjax(traverse_util.flatten_dict(params, sep="/"), cfg, "hf")
    write_tokenizer = (None if skip_tokenizer
                       else _tokenizer_writer(src, tokenizer, tok_identity, meta, cfg))
    hf_config["bertjax_source"] = meta.get("source", "") or str(pathlib.Path(src).resolve())
    with output.atomic_directory(out) as tmp:
        save_file(tensors, str(tmp / SAFETENSORS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        if write_tokenizer is not None:
            write_tokenizer(tmp)
    log.info("wrote %s (%d tensors%s)", out, len(tensors),
             "" if write_tokenizer is not None else ", no tokenizer")
    return pathlib.Path(out)


def _tokenizer_writer(src, tokenizer, identity: Mapping[str, Any], meta: Mapping[str, Any],
                      cfg: bert.BertConfig):
    """Finds and checks the checkpoint's tokenizer; returns a function writing its HF files."""
    import hashlib

    kind = identity.get("kind", "")
    recorded = identity.get("path", "")
    skip = "; or export the weights alone with --skip_tokenizer"
    if kind not in ("wordpiece", "sentencepiece"):
        raise ConversionError(f"the checkpoint records no known tokenizer (kind={kind!r}){skip}")
    candidates = [pathlib.Path(tokenizer)] if tokenizer else []
    if not tokenizer:
        configured = ((meta.get("config") or {}).get("data") or {}).get("tokenizer")
        if configured:
            repo = pathlib.Path(__file__).resolve().parents[2]
            candidates += [pathlib.Path(configured), repo / configured]
        candidates.append(pathlib.Path(src) / (recorded or wordpiece.VOCAB_FILE))
    if kind == "wordpiece":
        candidates = [wordpiece.vocab_path(c) for c in candidates
                      if wordpiece.is_wordpiece_path(c)]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"the checkpoint's {kind} tokenizer {recorded!r} was not found "
                                f"(looked at {[str(c) for c in candidates]}); pass --tokenizer"
                                f"{skip}")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    if sha != identity.get("sha256"):
        raise ConversionError(
            f"{path} (sha256 {sha[:12]}...) is not the tokenizer this checkpoint was trained "
            f"with ({recorded}, sha256 {str(identity.get('sha256'))[:12]}...)")
    if kind == "sentencepiece":
        from bertjax.convert import hf_tokenizer
        hf_tokenizer.convert(path.read_bytes(), str(path))  # refuse now, before writing
        return lambda d: hf_tokenizer.save(path, d, cfg.max_position_embeddings)
    tok = wordpiece.WordPieceTokenizer(path, identity.get("do_lower_case"))
    output.check_tokenizer(tok, cfg, str(tok.path))
    return lambda d: tok.save(d, model_max_length=cfg.max_position_embeddings)
