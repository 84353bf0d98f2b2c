"""Every field of a pretraining config (configs/pretrain.py) and what it may hold, as one table.

A row is a dotted key, its type and a constraint on its value, which may relate it to other
fields (`ok(value, config)`), with the text that says what was expected. `check(config)` is
called by train.check_config before anything is prepared or compiled: the first row that
fails raises ValueError `<key>=<value>: expected <...>`. Some constraints live with the code
that uses the value, because other callers need them too (the model's shapes in
bert.BertConfig, optimizer names in optim, the masking and pairing options in bertjax/data);
their rows name that place in `by`, and train.check_config calls it. Each row has its test in
tests/bad_inputs/test_config_table.py, which also checks that every field of the config has a
row.

WARNINGS are legal values that are almost certainly a mistake: one line each at the start.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

INT, FLOAT, BOOL, STR = (int,), (int, float), (bool,), (str,)
_TYPE_NAMES = {INT: "an integer", FLOAT: "a number", BOOL: "True or False", STR: "a string"}


@dataclasses.dataclass(frozen=True)
class Rule:
    key: str                                        # dotted: "train.keep_checkpoints"
    type: tuple
    ok: Callable[[Any, Any], bool] | None = None    # (value, config) -> fine?
    expected: str = ""
    by: str = ""                                    # checked there (train.check_config calls it)


def _min(low):
    return lambda v, c: v >= low


def _frac(v, c):
    return 0.0 <= v < 1.0


# Every evaluation (at train.eval_every, and always at the last step) reads the held-out split.
_EVAL_SPLIT = ("> 0: every run evaluates (at train.eval_every and at its last step) on the "
               "documents held out by data.eval_fraction")
_PHASE2 = "when train.phase2_start >= 0"

TABLE = (
    Rule("seed", INT, _min(0), "an integer >= 0"),
    Rule("objective", STR, by="objectives.of"),  # mlm | ltr, and what each needs of the model
    # --- model: bert.BertConfig checks shapes, names, dtypes and dropout rates.
    *(Rule(f"model.{k}", INT, by="bert.BertConfig") for k in (
        "vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
        "max_position_embeddings", "type_vocab_size")),
    *(Rule(f"model.{k}", STR, by="bert.BertConfig") for k in (
        "position_embedding", "hidden_act", "attention_impl", "dtype", "param_dtype")),
    Rule("model.size", STR),  # a label only
    *(Rule(f"model.{k}", BOOL) for k in ("pre_layer_norm", "remat", "scan_layers")),
    Rule("model.causal", BOOL, by="objectives.of"),  # must agree with the objective
    *(Rule(f"model.{k}", FLOAT, by="bert.BertConfig") for k in (
        "hidden_dropout_rate", "attention_dropout_rate")),
    Rule("model.layer_norm_eps", FLOAT, lambda v, c: v > 0, "> 0"),
    Rule("model.initializer_range", FLOAT, lambda v, c: v > 0, "> 0"),
    # --- data.
    Rule("data.corpus", STR, lambda v, c: bool(v.strip()),
         "'default', a file, a directory, a glob or 'tfds:NAME' (not empty)"),
    Rule("data.corpus_format", STR, by="corpus.check_format"),
    Rule("data.tokenizer", STR, lambda v, c: bool(v.strip()), "a tokenizer model (not empty)"),
    Rule("data.tfds_data_dir", STR),   # '' = TFDS's default
    Rule("data.prepared_dir", STR),    # '' = <workdir>/prepared
    Rule("data.prepare_workers", INT, _min(0), ">= 0 (0 = all cores)"),
    Rule("data.eval_fraction", FLOAT, by="prepare.check_eval_fraction"),
    Rule("data.eval_fraction", FLOAT, lambda v, c: v > 0, _EVAL_SPLIT),
    Rule("data.max_seq_len", INT, by="pretraining.PairingOptions"),
    Rule("data.short_seq_prob", FLOAT, by="pretraining.PairingOptions"),
    Rule("data.nsp", BOOL),
    Rule("data.nsp_single_sentence", STR, by="pretraining.PairingOptions"),
    Rule("data.mask_rate", FLOAT, by="masking.MaskingOptions"),
    Rule("data.mask_token_prob", FLOAT, by="masking.MaskingOptions"),
    Rule("data.random_token_prob", FLOAT, by="masking.MaskingOptions"),
    Rule("data.max_predictions_per_seq", INT, by="masking.MaskingOptions"),
    Rule("data.whole_word_mask", BOOL),
    Rule("data.packing", STR, by="pretraining.PairingOptions"),
    Rule("data.max_sequences_per_row", INT, by="pretraining.PairingOptions"),
    Rule("data.docs_per_group", INT, _min(3), "at least 3 (NotNext partners come from the "
                                              "same group)"),
    Rule("data.num_workers", INT, _min(0), ">= 0 (0 = in-process)"),
    Rule("data.shards", INT, _min(0), ">= 0 (0 = one per process)"),
    Rule("data.prefetch", INT, _min(0), ">= 0"),
    # --- optim: names, learning rate and warmup in optim.check_config.
    Rule("optim.name", STR, by="optim.check_config"),
    Rule("optim.schedule", STR, by="optim.check_config"),
    Rule("optim.learning_rate", FLOAT, by="optim.check_config"),
    Rule("optim.warmup_steps", INT, by="optim.check_config"),
    Rule("optim.b1", FLOAT, _frac, "a decay rate in [0, 1)"),
    Rule("optim.b2", FLOAT, _frac, "a decay rate in [0, 1)"),
    Rule("optim.momentum", FLOAT, _frac, "a decay rate in [0, 1)"),
    Rule("optim.eps", FLOAT, lambda v, c: v > 0, "> 0"),
    Rule("optim.weight_decay", FLOAT, _min(0), ">= 0"),
    Rule("optim.grad_clip_norm", FLOAT, _min(0), ">= 0 (0 = no clipping)"),
    # --- train.
    *(Rule(f"train.{k}", INT, _min(1), "a positive integer") for k in (
        "batch_size", "grad_accum_steps", "steps", "log_every", "eval_every", "eval_steps",
        "checkpoint_every")),
    Rule("train.batch_size", INT, by="parallel.check_batch_divisible"),
    Rule("train.keep_checkpoints", INT, _min(1),
         "at least 1 (0 would keep no checkpoint: the run's training would be lost)"),
    Rule("train.async_checkpointing", BOOL),
    Rule("train.budget_minutes", FLOAT, _min(0), ">= 0 (0 = no budget)"),
    Rule("train.budget_flops", FLOAT, _min(0), ">= 0 (0 = no budget)"),
    Rule("train.stop_at_escape", BOOL, lambda v, c: not v or c.objective == "mlm",
         "False with objective 'ltr' (the escape is read from the MLM context probe)"),
    Rule("train.phase2_start", INT, lambda v, c: v == -1 or v >= 1,
         "-1 (one phase) or the step at which phase 2 starts (>= 1)"),
    Rule("train.phase2_max_seq_len", INT, lambda v, c: c.train.phase2_start < 0 or v >= 8,
         f"at least 8 {_PHASE2}"),
    Rule("train.phase2_max_predictions_per_seq", INT,
         lambda v, c: c.train.phase2_start < 0 or v >= 1, f"at least 1 {_PHASE2}"),
    # --- parallel.
    Rule("parallel.mode", STR, by="parallel.check_mode"),
    Rule("parallel.fsdp", BOOL, by="parallel.check_mode"),
    Rule("parallel.distributed", BOOL),
)


@dataclasses.dataclass(frozen=True)
class Warn:
    key: str
    bad: Callable[[Any, Any], bool]   # (value, config) -> likely a mistake?
    says: str


WARNINGS = (
    Warn("optim.warmup_steps", lambda v, c: v >= c.train.steps,
             "the warmup is at least as long as the run (train.steps={steps}): the learning "
             "rate never reaches optim.learning_rate"),
    Warn("train.phase2_start", lambda v, c: v >= c.train.steps,
             "phase 2 would start after the last step (train.steps={steps}): it never runs"),
    Warn("data.eval_fraction", lambda v, c: v > 0.5,
             "more than half of the documents are held out for evaluation, not trained on"),
    Warn("optim.learning_rate", lambda v, c: v > 0.1,
             "far above any BERT recipe (1e-4 for Adam, at most ~1e-2 for LAMB): a typo?"),
)


def get(config, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _type_ok(value, types: tuple) -> bool:
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def check(config) -> list[str]:
    """Raise ValueError for the first row of TABLE that `config` breaks; return the lines of
    the WARNINGS that apply."""
    for rule in TABLE:
        value = get(config, rule.key)
        if not _type_ok(value, rule.type):
            raise ValueError(f"{rule.key}={value!r}: expected {_TYPE_NAMES[rule.type]}")
        if rule.ok is not None and not rule.ok(value, config):
            raise ValueError(f"{rule.key}={value!r}: expected {rule.expected}")
    return [f"{w.key}={get(config, w.key)!r}: {w.says.format(steps=config.train.steps)}"
            for w in WARNINGS if w.bad(get(config, w.key), config)]
