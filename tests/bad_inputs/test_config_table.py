"""One test per row of the pretraining config table (bertjax/config_checks.py): each value it
refuses is refused by train.check_config with `<key>=<value>: expected ...` before anything is
prepared or compiled; each warning is one line at the start; every field of
configs/pretrain.py has a row."""
import collections
import logging

import ml_collections
import pytest

from bertjax import config_checks, train
from configs import pretrain

ROWS = collections.Counter(r.key for r in config_checks.TABLE)


def _config(**overrides):
    """The tiny config, without ml_collections' type safety (so wrong types can be given)."""
    c = ml_collections.ConfigDict(pretrain.get_config("tiny").to_dict(), type_safe=False)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = c
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield prefix + k


@pytest.mark.parametrize("variant", ["tiny", "base,gpu", "large,bert_recipe,tpu,packed"])
def test_every_field_of_the_config_has_a_row(variant):
    assert set(_leaves(pretrain.get_config(variant).to_dict())) == set(ROWS)


def test_the_default_configs_pass_without_warnings(caplog):
    for variant in ("tiny", "mini", "tiny,cpu_transfer", "base", "base,bert_recipe"):
        with caplog.at_level(logging.WARNING, logger="bertjax"):
            train.check_config(pretrain.get_config(variant))
    assert not caplog.records


def _wrong_type(rule):
    return 1.5 if rule.type == config_checks.STR else "x"


@pytest.mark.parametrize("key", sorted(ROWS))
def test_a_value_of_the_wrong_type(key):
    rule = next(r for r in config_checks.TABLE if r.key == key)
    bad = _wrong_type(rule)
    with pytest.raises(ValueError, match=rf"^{key}={bad!r}: expected "):
        config_checks.check(_config(**{key: bad}))


def test_true_is_not_an_integer():
    with pytest.raises(ValueError, match=r"^train.steps=True: expected an integer"):
        config_checks.check(_config(**{"train.steps": True}))


# (key, overrides, start of the message): one case per constraint row of the table; rows with
# `by` are checked by the function they name, which check_config calls.
CASES = [
    ("seed", {"seed": -1}, "seed=-1: expected an integer >= 0"),
    ("objective", {"objective": "clm"}, "objective='clm': expected one of ['ltr', 'mlm']"),
    ("model.causal", {"model.causal": True},
     "objective='mlm' needs model.causal=False, got model.causal=True"),
    ("model.vocab_size", {"model.vocab_size": 0}, "model.vocab_size=0: expected a positive"),
    ("model.hidden_size", {"model.hidden_size": 0}, "model.hidden_size=0: expected a positive"),
    ("model.num_layers", {"model.num_layers": 0}, "model.num_layers=0: expected a positive"),
    ("model.num_heads", {"model.num_heads": 3}, "model.hidden_size=128: expected a multiple"),
    ("model.intermediate_size", {"model.intermediate_size": -1},
     "model.intermediate_size=-1: expected a positive"),
    ("model.max_position_embeddings", {"model.max_position_embeddings": 0},
     "model.max_position_embeddings=0: expected a positive"),
    ("model.type_vocab_size", {"model.type_vocab_size": 0},
     "model.type_vocab_size=0: expected a positive"),
    ("model.position_embedding", {"model.position_embedding": "rope"},
     "model.position_embedding='rope': expected one of"),
    ("model.hidden_act", {"model.hidden_act": "relu"}, "model.hidden_act='relu': expected one"),
    ("model.attention_impl", {"model.attention_impl": "flash"},
     "attention_impl='flash' is not known; expected one of"),
    ("model.dtype", {"model.dtype": "float64"}, "model.dtype='float64': expected one of"),
    ("model.param_dtype", {"model.param_dtype": "int8"}, "model.param_dtype='int8': expected"),
    ("model.hidden_dropout_rate", {"model.hidden_dropout_rate": 1.0},
     "model.hidden_dropout_rate=1.0: expected a probability in [0, 1)"),
    ("model.attention_dropout_rate", {"model.attention_dropout_rate": -0.1},
     "model.attention_dropout_rate=-0.1: expected a probability"),
    ("model.layer_norm_eps", {"model.layer_norm_eps": 0.0},
     "model.layer_norm_eps=0.0: expected > 0"),
    ("model.initializer_range", {"model.initializer_range": -0.02},
     "model.initializer_range=-0.02: expected > 0"),
    ("data.corpus", {"data.corpus": " "}, "data.corpus=' ': expected 'default', a file"),
    ("data.corpus_format", {"data.corpus_format": "xml"}, "data.corpus_format='xml'"),
    ("data.tokenizer", {"data.tokenizer": ""}, "data.tokenizer='': expected a tokenizer model"),
    ("data.prepare_workers", {"data.prepare_workers": -2},
     "data.prepare_workers=-2: expected >= 0"),
    ("data.eval_fraction", {"data.eval_fraction": 1.0},
     "data.eval_fraction=1.0: expected a fraction in [0, 1)"),
    ("data.eval_fraction", {"data.eval_fraction": 0.0},
     "data.eval_fraction=0.0: expected > 0: every run evaluates"),
    ("data.max_seq_len", {"data.max_seq_len": 4}, "data.max_seq_len=4: expected at least 8"),
    ("data.short_seq_prob", {"data.short_seq_prob": 1.5}, "data.short_seq_prob=1.5: expected"),
    ("data.nsp_single_sentence", {"data.nsp_single_sentence": "drop"},
     "data.nsp_single_sentence='drop': expected one"),
    ("data.mask_rate", {"data.mask_rate": 0.0}, "data.mask_rate=0.0: expected a rate in (0, 1]"),
    ("data.mask_token_prob", {"data.mask_token_prob": 1.2}, "data.mask_token_prob=1.2"),
    ("data.random_token_prob", {"data.random_token_prob": 0.3},
     "data.random_token_prob=0.3: expected at most 1 - mask_token_prob"),
    ("data.max_predictions_per_seq", {"data.max_predictions_per_seq": 0},
     "data.max_predictions_per_seq=0"),
    ("data.packing", {"data.packing": "rows"}, "data.packing='rows': expected one of"),
    ("data.max_sequences_per_row", {"data.packing": "sequences", "model.attention_impl": "xla",
                                    "model.attention_dropout_rate": 0.0,
                                    "data.max_sequences_per_row": 0},
     "data.max_sequences_per_row=0"),
    ("data.docs_per_group", {"data.docs_per_group": 2},
     "data.docs_per_group=2: expected at least 3"),
    ("data.num_workers", {"data.num_workers": -1}, "data.num_workers=-1: expected >= 0"),
    ("data.shards", {"data.shards": -4}, "data.shards=-4: expected >= 0"),
    ("data.prefetch", {"data.prefetch": -1}, "data.prefetch=-1: expected >= 0"),
    ("optim.name", {"optim.name": "adamax"}, "optim.name='adamax': expected one of"),
    ("optim.schedule", {"optim.schedule": "linear"}, "optim.schedule='linear': expected one of"),
    ("optim.learning_rate", {"optim.learning_rate": 0.0},
     "optim.learning_rate=0.0: expected > 0"),
    ("optim.warmup_steps", {"optim.warmup_steps": -10}, "optim.warmup_steps=-10: expected >= 0"),
    ("optim.b1", {"optim.b1": 1.0}, "optim.b1=1.0: expected a decay rate in [0, 1)"),
    ("optim.b2", {"optim.b2": 0.9999 * 10}, "optim.b2=9.999: expected a decay rate"),
    ("optim.momentum", {"optim.momentum": -0.5}, "optim.momentum=-0.5: expected a decay rate"),
    ("optim.eps", {"optim.eps": 0.0}, "optim.eps=0.0: expected > 0"),
    ("optim.weight_decay", {"optim.weight_decay": -0.01}, "optim.weight_decay=-0.01: expected"),
    ("optim.grad_clip_norm", {"optim.grad_clip_norm": -1.0}, "optim.grad_clip_norm=-1.0"),
    ("train.batch_size", {"train.batch_size": 0}, "train.batch_size=0: expected a positive"),
    ("train.batch_size", {"train.batch_size": 12}, "train.batch_size=12 must be divisible by"),
    ("train.grad_accum_steps", {"train.grad_accum_steps": 0},
     "train.grad_accum_steps=0: expected a positive integer"),
    ("train.steps", {"train.steps": 0}, "train.steps=0: expected a positive integer"),
    ("train.log_every", {"train.log_every": 0}, "train.log_every=0: expected a positive"),
    ("train.eval_every", {"train.eval_every": -1}, "train.eval_every=-1: expected a positive"),
    ("train.eval_steps", {"train.eval_steps": 0}, "train.eval_steps=0: expected a positive"),
    ("train.checkpoint_every", {"train.checkpoint_every": 0},
     "train.checkpoint_every=0: expected a positive"),
    ("train.keep_checkpoints", {"train.keep_checkpoints": 0},
     "train.keep_checkpoints=0: expected at least 1 (0 would keep no checkpoint"),
    ("train.budget_minutes", {"train.budget_minutes": -1.0},
     "train.budget_minutes=-1.0: expected >= 0 (0 = no budget)"),
    ("train.budget_flops", {"train.budget_flops": -5.0}, "train.budget_flops=-5.0: expected"),
    ("train.stop_at_escape", {"objective": "ltr", "model.causal": True, "data.nsp": False,
                              "train.stop_at_escape": True},
     "train.stop_at_escape=True: expected False with objective 'ltr'"),
    ("train.phase2_start", {"train.phase2_start": 0},
     "train.phase2_start=0: expected -1 (one phase) or the step"),
    ("train.phase2_max_seq_len", {"train.phase2_start": 10, "train.phase2_max_seq_len": 4},
     "train.phase2_max_seq_len=4: expected at least 8 when train.phase2_start >= 0"),
    ("train.phase2_max_predictions_per_seq",
     {"train.phase2_start": 10, "train.phase2_max_predictions_per_seq": 0},
     "train.phase2_max_predictions_per_seq=0: expected at least 1"),
    ("parallel.mode", {"parallel.mode": "pjit"}, "parallel.mode='pjit': expected one of"),
    ("parallel.fsdp", {"parallel.mode": "pmap", "parallel.fsdp": True},
     "parallel.fsdp=True needs parallel.mode='jit'"),
]


def test_every_constraint_row_has_a_case():
    constrained = collections.Counter(r.key for r in config_checks.TABLE if r.ok or r.by)
    # model.num_heads' row is its divisibility (BertConfig); a zero is caught as a size too.
    assert collections.Counter(k for k, _, _ in CASES) == constrained


@pytest.mark.parametrize("key, overrides, message", CASES,
                         ids=[f"{k}:{i}" for i, (k, _, _) in enumerate(CASES)])
def test_row(key, overrides, message):
    with pytest.raises(ValueError) as err:
        train.check_config(_config(**overrides))
    assert str(err.value).startswith(message), (str(err.value), message)


def test_legal_values_at_the_edges_pass():
    for overrides in ({"train.keep_checkpoints": 1}, {"data.eval_fraction": 0.001},
                      {"train.phase2_start": 1}, {"optim.b2": 0.0}, {"seed": 0},
                      {"optim.grad_clip_norm": 0.0}, {"data.prefetch": 0}):
        train.check_config(_config(**overrides))


@pytest.mark.parametrize("overrides, line", [
    ({"optim.warmup_steps": 300}, "optim.warmup_steps=300: the warmup is at least as long as "
                                  "the run (train.steps=300)"),
    ({"train.phase2_start": 500}, "train.phase2_start=500: phase 2 would start after the last "
                                  "step (train.steps=300)"),
    ({"data.eval_fraction": 0.6}, "data.eval_fraction=0.6: more than half of the documents"),
    ({"optim.learning_rate": 1.0}, "optim.learning_rate=1.0: far above any BERT recipe"),
])
def test_warning(overrides, line, caplog):
    with caplog.at_level(logging.WARNING, logger="bertjax"):
        train.check_config(_config(**overrides))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(line), lines
    assert len(config_checks.WARNINGS) == 4  # one case above per warning row


def test_empty_workdir_is_refused_by_the_library(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^workdir is empty; expected a directory"):
        train.train_and_evaluate(pretrain.get_config("tiny"), "")
    assert not list(tmp_path.iterdir())
