"""What fine-tuning starts from: a checkpoint's encoder (or random initialisation), the model
config, and the tokenizer that belongs to them.

The tokenizer is the one given (`--tokenizer` or config.tokenizer), checked against the
checkpoint's record; when none is given, the checkpoint's own: the WordPiece vocabulary an
import wrote beside it (`vocab.txt`), or the sentencepiece model its pretraining run recorded.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping

import jax
import numpy as np
from flax import traverse_util
from absl import logging

from bertjax import checkpoint
from bertjax.data import tokenizer as tokenizer_lib
from bertjax.data import wordpiece
from bertjax.models import bert

# The random-initialisation baseline's tokenizer when none is given (the repository's default,
# as in configs/pretrain.py).
RANDOM_INIT_TOKENIZER = "tokenizers/enwiki_30522_unigram.model"

# Fields of config.model that also apply on top of a checkpoint's config: they change how the
# model runs, not its shapes. Everything else comes from the checkpoint.
RUNTIME_MODEL_FIELDS = ("hidden_dropout_rate", "attention_dropout_rate", "attention_impl",
                        "dtype", "remat")


@dataclasses.dataclass
class Init:
    """What every run of every task starts from."""
    model_config: bert.BertConfig
    # The pretrained encoder ('bert' subtree) as host arrays, None = random init. Host arrays,
    # because each run's train step donates its state: every run must get its own device copy.
    bert_params: Any | None
    tokenizer: Any
    source: str                        # checkpoint path, or 'random'


def resolve_init(config, init_checkpoint: str, tokenizer_path: str = "") -> Init:
    """Loads the checkpoint (if any) and the tokenizer, and checks that they belong together."""
    given = tokenizer_path or config.tokenizer
    runtime = {k: config.model[k] for k in RUNTIME_MODEL_FIELDS}
    if not init_checkpoint:
        tok = tokenizer_lib.load(given or RANDOM_INIT_TOKENIZER)
        model = dict(config.model.to_dict(), vocab_size=tok.vocab_size)
        return Init(bert.BertConfig.from_dict(model), None, tok, "random")
    params, cfg, identity, meta = checkpoint.load_pretrained(init_checkpoint)
    if "bert" not in params:
        raise ValueError(f"{init_checkpoint}: params have no 'bert' subtree (found "
                         f"{sorted(params)}); expected a bertjax pretraining checkpoint")
    if given:
        tok = tokenizer_lib.load(given)
        check_identity(tok, identity, init_checkpoint)
    else:
        tok = checkpoint_tokenizer(init_checkpoint, identity, meta)
    tokenizer_lib.check_matches_model(tok, cfg.vocab_size)
    cfg = dataclasses.replace(cfg, **runtime)
    return Init(cfg, jax.device_get(params["bert"]), tok, str(init_checkpoint))


def checkpoint_tokenizer(path: str, identity: Mapping, meta: Mapping):
    """The tokenizer a checkpoint records, found where it can be: `vocab.txt` beside an
    imported checkpoint, the model path its pretraining run was given, or tokenizers/<name>."""
    root = pathlib.Path(checkpoint.checkpoint_dir(path))
    candidates = [p for p in dict.fromkeys([pathlib.Path(path), root.parent])
                  if wordpiece.is_wordpiece_path(p)]
    recorded = (meta.get("config") or {}).get("data", {}).get("tokenizer")
    if recorded:
        candidates.append(recorded)
    if identity.get("path"):
        candidates.append(f"tokenizers/{identity['path']}")
    tried = []
    for c in candidates:
        try:
            tok = tokenizer_lib.load(c)
        except (OSError, ValueError) as e:
            tried.append(f"{c} ({e.__class__.__name__})")
            continue
        if not identity or tok.identity().get("sha256") == identity.get("sha256"):
            if not identity:
                logging.warning("%s records no tokenizer identity; using %s", path, c)
            logging.info("%s: using the checkpoint's tokenizer %s", path, c)
            return tok
        tried.append(f"{c} (a different tokenizer: sha256 {tok.identity().get('sha256')})")
    raise ValueError(
        f"{path} was pretrained with tokenizer {identity.get('path', '?')} "
        f"(sha256={identity.get('sha256', '?')}), which was not found: tried "
        f"{tried or 'nothing (no vocab.txt beside it, no model path recorded)'}. Pass it with "
        "--tokenizer.")


def check_identity(tok, identity: Mapping, where: str) -> None:
    if not identity:
        logging.warning("%s records no tokenizer identity; only the vocabulary size is checked",
                        where)
        return
    mine = tok.identity()
    for key in ("sha256", "vocab_size"):
        if key in identity and identity[key] != mine.get(key):
            raise ValueError(
                f"tokenizer mismatch: {where} was pretrained with {identity.get('path', '?')} "
                f"({key}={identity[key]}), but the tokenizer given is {mine.get('path')} "
                f"({key}={mine.get(key)}). Pass the checkpoint's tokenizer with --tokenizer, "
                "or none to use the one the checkpoint records.")


def check_encoder_fits(param_shapes: Mapping, init: Init) -> None:
    """Compares shapes only (nothing materialised): a checkpoint that does not fit the model is
    an error before anything is compiled."""
    if init.bert_params is None:
        return
    expect = traverse_util.flatten_dict(dict(param_shapes["bert"]), sep="/")
    got = traverse_util.flatten_dict(dict(init.bert_params), sep="/")
    bad = sorted(set(expect) ^ set(got)) or [
        k for k in expect if tuple(expect[k].shape) != tuple(np.shape(got[k]))]
    if bad:
        raise ValueError(f"checkpoint encoder does not fit the model: differing keys or "
                         f"shapes {bad[:5]} ({len(bad)} in all)")
