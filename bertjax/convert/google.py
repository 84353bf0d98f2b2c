"""Google's original BERT TensorFlow checkpoints -> bertjax checkpoints.

A Google release directory holds `bert_model.ckpt.{index,data-*}`, `bert_config.json` and
`vocab.txt`. The variables are read with `tf.train.load_checkpoint` (tensorflow is an optional
extra, `[tf]`); everything after that is `convert_variables`, a pure function over a
{name: array} dict, so the naming is testable without tensorflow.

Activation: Google's modeling.py implements hidden_act 'gelu' with the tanh approximation, so it
becomes our 'gelu_tanh' (transformers maps the same string to the exact erf GELU; the two differ
by under 1e-3 per activation). Lower-casing is taken from the directory name (Google's releases
are named uncased_* / cased_* / multi_cased_*), else inferred from the vocabulary.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Callable, Mapping

import numpy as np

from bertjax.convert import output, table
from bertjax.convert.table import ConversionError
from bertjax.data import wordpiece
from bertjax.models import bert

log = logging.getLogger(__name__)

CONFIG_FILE = "bert_config.json"
CHECKPOINT_PREFIX = "bert_model.ckpt"
ACTIVATIONS = {"gelu": "gelu_tanh"}  # see the module docstring
_IGNORED_SUFFIXES = ("/adam_m", "/adam_v")  # AdamWeightDecay slots in pretraining checkpoints
_IGNORED_NAMES = ("global_step",)


def config_from_google(d: Mapping, where: str = CONFIG_FILE) -> bert.BertConfig:
    missing = table.missing_config_keys(d)
    if missing:
        raise ConversionError(f"{where}: missing keys {missing}")
    act = d.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise ConversionError(f"{where}: hidden_act={act!r} is not supported; expected "
                              f"{sorted(ACTIVATIONS)}")
    # layer_norm_eps: tf.contrib.layers.layer_norm's epsilon in Google's modeling.py.
    return table.config_from_bert_json(d, ACTIVATIONS[act], where, type_vocab_default=16,
                                       layer_norm_eps=1e-12)


def is_ignored(name: str) -> bool:
    """Optimizer state and step counters, which a model import leaves behind."""
    return name.endswith(_IGNORED_SUFFIXES) or name in _IGNORED_NAMES


def convert_variables(variables: Mapping[str, np.ndarray], cfg: bert.BertConfig,
                      where: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """{TF variable name: array} -> (flat bertjax params, absent optional groups)."""
    kept = {k: v for k, v in variables.items() if not is_ignored(k)}
    return table.to_bertjax(kept, cfg, "google", where)


def find_checkpoint(src: str | os.PathLike) -> pathlib.Path:
    """A release directory (or a checkpoint prefix) -> the checkpoint prefix."""
    src = pathlib.Path(src)
    if src.with_name(src.name + ".index").is_file():
        return src
    if (src / (CHECKPOINT_PREFIX + ".index")).is_file():
        return src / CHECKPOINT_PREFIX
    indexes = sorted(src.glob("*.index")) if src.is_dir() else []
    if len(indexes) == 1:
        return indexes[0].with_suffix("")
    raise FileNotFoundError(
        f"{src}: expected a TensorFlow checkpoint ({CHECKPOINT_PREFIX}.index + .data-*) or its "
        f"prefix; found {[p.name for p in indexes] or 'no .index file'}")


def read_tf_checkpoint(prefix: str | os.PathLike,
                       keep: Callable[[str], bool] = lambda name: not is_ignored(name)
                       ) -> dict[str, np.ndarray]:
    """Variables of a TF checkpoint (those `keep` accepts, so optimizer slots are never read)."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError("reading Google's TensorFlow checkpoints needs tensorflow "
                          "(pip install 'bertjax[tf]')") from e
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: np.asarray(reader.get_tensor(name))
            for name in sorted(reader.get_variable_to_shape_map()) if keep(name)}


def lower_case_from_name(directory: pathlib.Path) -> bool | None:
    words = directory.name.lower().replace("-", "_").split("_")
    if "uncased" in words:
        return True
    if "cased" in words:
        return False
    return None


def import_checkpoint(src: str | os.PathLike, out: str | os.PathLike, *,
                      scan_layers: bool = False, seed: int = 0,
                      do_lower_case: bool | None = None,
                      reader: Callable[[pathlib.Path], Mapping[str, np.ndarray]] | None = None
                      ) -> pathlib.Path:
    """Google release directory -> bertjax checkpoint at `out` (same layout as hf imports).

    `reader` replaces read_tf_checkpoint (tests pass a dict-backed one)."""
    src = pathlib.Path(src)
    output.check_free(out)
    config_file = src / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found; expected a Google BERT directory "
                                f"({CONFIG_FILE}, {CHECKPOINT_PREFIX}.*, vocab.txt)")
    cfg = config_from_google(json.loads(config_file.read_text(encoding="utf-8")), str(config_file))
    prefix = find_checkpoint(src)
    variables = (reader or read_tf_checkpoint)(prefix)
    flat, absent = convert_variables(variables, cfg, f"checkpoint {prefix}")
    if do_lower_case is None:
        do_lower_case = lower_case_from_name(src.resolve())
    tok = wordpiece.WordPieceTokenizer(src, do_lower_case)
    output.check_tokenizer(tok, cfg, str(src))
    if tok.lower_case_inferred:
        log.warning("%s: inferred do_lower_case=%s from the vocabulary", src, tok.do_lower_case)
    flat = output.fill_missing_groups(flat, cfg, absent, seed)
    if scan_layers:
        cfg = bert.BertConfig.from_dict({**cfg.to_dict(), "scan_layers": True})
    conversion = {"from": "google", "src": str(src.resolve()), "checkpoint": prefix.name,
                  "initialised": absent, "seed": seed}
    return output.write_imported(out, flat, cfg, tok, source=f"google:{src.resolve()}",
                                 conversion=conversion)
