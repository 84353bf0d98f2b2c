"""Writing conversion results: all or nothing, and what every import ends with.

Everything is read and checked before anything is written; the output is then built in a hidden
sibling directory and renamed into place, so a failure leaves no partial output behind.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import tempfile
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from bertjax import checkpoint
from bertjax.convert import table
from bertjax.data import wordpiece
from bertjax.models import bert

log = logging.getLogger(__name__)


def check_free(out: str | os.PathLike) -> pathlib.Path:
    """Fails early (before any reading or converting) when `out` is taken."""
    out = pathlib.Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty directory; "
                              "refusing to overwrite it")
    return out


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a temporary directory that becomes `out` only if the block succeeds."""
    out = check_free(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()  # empty (check_free); rename cannot replace a directory
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fill_missing_groups(flat: Mapping[str, np.ndarray], cfg: bert.BertConfig,
                        groups: list[str], seed: int) -> dict[str, np.ndarray]:
    """Freshly initialised (as in pretraining) parameters for the absent optional groups.

    Only the missing modules are initialised, so this stays cheap for large models."""
    flat = dict(flat)
    h = jnp.zeros((1, 1, cfg.hidden_size), jnp.float32)
    positions = jnp.zeros((1, 1), jnp.int32)
    embeddings = jnp.zeros((cfg.vocab_size, cfg.hidden_size), jnp.float32)
    key_pooler, key_heads = jax.random.split(jax.random.PRNGKey(seed))
    fresh = {}
    if "bert/pooler" in groups:
        fresh.update({"bert/pooler/" + k: v for k, v in traverse_util.flatten_dict(
            bert.Pooler(cfg).init(key_pooler, h)["params"], sep="/").items()})
    if {"cls/predictions", "cls/seq_relationship"} & set(groups):
        heads = bert.PreTrainingHeads(cfg).init(key_heads, h, h[:, 0], positions, embeddings)
        fresh.update({"cls/" + k: v for k, v in traverse_util.flatten_dict(
            heads["params"], sep="/").items()})
    for k, v in fresh.items():
        if table.group_of(k) in groups:
            flat[k] = np.asarray(v, np.float32)
    for g in groups:
        log.warning("the source has no %s (%s): initialised fresh with seed %d",
                    table.OPTIONAL_GROUPS[g], g, seed)
    return flat


def check_tokenizer(tok: wordpiece.WordPieceTokenizer, cfg: bert.BertConfig, where: str) -> None:
    if tok.vocab_size > cfg.vocab_size:
        raise table.ConversionError(
            f"{where}: the vocabulary has {tok.vocab_size} tokens but the model only "
            f"{cfg.vocab_size} embeddings; they do not belong together")
    if tok.vocab_size < cfg.vocab_size:
        log.info("%s: the model has %d embeddings for %d vocabulary tokens (the rest unused)",
                 where, cfg.vocab_size, tok.vocab_size)


def write_imported(out, flat: Mapping[str, np.ndarray], cfg: bert.BertConfig,
                   tok: wordpiece.WordPieceTokenizer, *, source: str,
                   conversion: Mapping[str, Any]) -> pathlib.Path:
    """An imported model as `out/checkpoints` (Orbax, read by checkpoint.load_pretrained(out))
    plus `out/vocab.txt` and `out/tokenizer_config.json` (read by wordpiece.load(out))."""
    if cfg.scan_layers:
        flat = table.stack_layers(flat, cfg.num_layers)
    params = traverse_util.unflatten_dict(flat, sep="/")
    out = pathlib.Path(out)
    with atomic_directory(out) as tmp:
        checkpoint.save_pretrained(tmp / checkpoint.CHECKPOINT_SUBDIR, params, cfg,
                                   tok.identity(), source=source,
                                   extra={"conversion": dict(conversion)})
        tok.save(tmp, model_max_length=cfg.max_position_embeddings)
    log.info("wrote %s (%d parameters, tokenizer %s)", out, bert.param_count(params), tok)
    return out
