"""Bad config values: each refused by check_config (or the GLUE config check) with the key, the
value and what was expected, before any data is prepared or anything compiled. The unknown-key
row and the "nothing is written" rows run scripts/pretrain.py as a user does."""
import pytest
from bad_input_helpers import REPO, assert_one_line_error, checksums, run_script

from bertjax import checkpoint, train
from bertjax.finetune import grid
from configs import glue as glue_config
from configs import pretrain

CONFIG = str(REPO / "configs" / "pretrain.py") + ":tiny"


def _check(**overrides):
    c = pretrain.get_config("tiny")
    for key, value in overrides.items():
        section, field = key.split("__")
        c[section][field] = value
    return train.check_config(c)


def test_sizes_that_do_not_divide():
    with pytest.raises(ValueError, match=r"model.hidden_size=128: expected a multiple of "
                                         r"num_heads=3 \(head_dim must be an integer\)"):
        _check(model__num_heads=3)


def test_batch_not_divisible_by_devices():
    # conftest simulates 8 devices
    with pytest.raises(ValueError, match=r"train.batch_size=12 must be divisible by devices x "
                                         r"grad_accum_steps = 8 x 1 = 8"):
        _check(train__batch_size=12)
    with pytest.raises(ValueError, match=r"= 8 x 3 = 24"):
        _check(train__batch_size=32, train__grad_accum_steps=3)


@pytest.mark.parametrize("overrides, message", [
    ({"data__max_seq_len": 1024}, r"data.max_seq_len=1024: sequence length 1024 exceeds "
                                  r"model.max_position_embeddings=512; expected at most that"),
    ({"train__phase2_start": 10, "train__phase2_max_seq_len": 600},
     r"train.phase2_max_seq_len=600: sequence length 600 exceeds model.max_position_embeddings"),
])
def test_sequence_length_above_max_positions(overrides, message):
    with pytest.raises(ValueError, match=message):
        _check(**overrides)


@pytest.mark.parametrize("overrides, message", [
    ({"train__steps": 0}, r"train.steps=0: expected a positive integer"),
    ({"train__steps": -5}, r"train.steps=-5: expected a positive integer"),
    ({"train__eval_steps": 0}, r"train.eval_steps=0: expected a positive integer"),
    ({"train__checkpoint_every": -1}, r"train.checkpoint_every=-1: expected a positive integer"),
    ({"optim__learning_rate": 0.0}, r"optim.learning_rate=0.0: expected > 0"),
    ({"optim__learning_rate": -1e-4}, r"optim.learning_rate=-0.0001: expected > 0"),
    ({"optim__warmup_steps": -10}, r"optim.warmup_steps=-10: expected >= 0"),
    ({"model__hidden_dropout_rate": 1.0}, r"model.hidden_dropout_rate=1.0: expected a "
                                          r"probability in \[0, 1\)"),
    ({"data__eval_fraction": 1.0}, r"data.eval_fraction=1.0: expected a fraction in \[0, 1\)"),
])
def test_negative_or_zero_steps_and_rates(overrides, message):
    with pytest.raises(ValueError, match=message):
        _check(**overrides)


def test_mask_probabilities_that_sum_above_one():
    with pytest.raises(ValueError, match=r"data.random_token_prob=0.3: expected at most 1 - "
                                         r"mask_token_prob = 0.2 \(the rest of the selected "
                                         r"tokens stay unchanged\)"):
        _check(data__mask_token_prob=0.8, data__random_token_prob=0.3)


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_mask_rate_outside_zero_one(rate):
    with pytest.raises(ValueError, match=rf"data.mask_rate={rate}: expected a rate in \(0, 1\]"):
        _check(data__mask_rate=rate)


def test_glue_learning_rates_and_batch_sizes():
    c = glue_config.get_config("RTE,tiny")
    c.learning_rates = (3e-4, -1e-5)
    with pytest.raises(ValueError, match=r"config.learning_rates=\(0.0003, -1e-05\): expected "
                                         r"positive values"):
        grid.validate_config(c)
    c = glue_config.get_config("RTE,tiny")
    c.batch_sizes = (12,)
    with pytest.raises(ValueError, match=r"config.batch_sizes=\(12,\): each must be a positive "
                                         r"multiple of the 8 devices"):
        grid.validate_config(c)


# --- Through the entry point, as a user runs it (subprocesses: a few seconds each). -------------

def test_unknown_config_key_is_one_line_naming_the_flag(tmp_path):
    proc = run_script("pretrain.py", f"--config={CONFIG}", "--workdir=runs/x",
                      "--config.train.batchsize=64", cwd=tmp_path)
    assert_one_line_error(proc, "error: --config.train.batchsize: unknown config key 'batchsize'",
                          'Did you mean "batch_size"', "the config is locked")
    assert not (tmp_path / "runs").exists()


def test_bad_value_fails_before_the_workdir_or_data_is_touched(tmp_path):
    proc = run_script("pretrain.py", f"--config={CONFIG}", "--workdir=runs/x",
                      "--config.data.mask_token_prob=0.95", cwd=tmp_path)
    assert_one_line_error(proc, "error: data.random_token_prob=0.1: expected at most 1 - "
                          "mask_token_prob = 0.05")
    assert not (tmp_path / "runs").exists()  # no config.json, no prepared data


def test_rerun_with_another_model_size_leaves_the_run_intact(tmp_path):
    """A workdir holding a tiny run (config, a checkpoint, metrics): running `:mini` into it is
    refused and not one byte of it changes."""
    import numpy as np
    workdir = tmp_path / "runs" / "tiny"
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(pretrain.get_config("tiny").to_json(indent=2))
    (workdir / "metrics.jsonl").write_text('{"step": 100, "kind": "train", "loss": 7.1}\n')
    checkpoint.save_pretrained(str(workdir / "checkpoints"), {"bert": {"w": np.ones(4)}},
                               pretrain.get_config("tiny").model.to_dict(), {}, step=100)
    before = checksums(workdir)
    mini = str(REPO / "configs" / "pretrain.py") + ":mini"
    proc = run_script("pretrain.py", f"--config={mini}", "--workdir=runs/tiny", cwd=tmp_path)
    assert_one_line_error(proc, "holds a run with a different config (model.hidden_size: 128 -> "
                          "256", "nothing was overwritten")
    assert checksums(workdir) == before


def test_bad_corpus_through_the_entry_point(tmp_path):
    (tmp_path / "fr.txt").write_bytes("Le café est très bon.\nLa crème.\n".encode("latin-1"))
    proc = run_script("pretrain.py", f"--config={CONFIG}", "--workdir=runs/x",
                      "--config.data.corpus=fr.txt", cwd=tmp_path)
    assert_one_line_error(proc, f"error: {tmp_path / 'fr.txt'}:1: byte 0xe9 is not UTF-8",
                          "iconv -f cp1252 -t utf-8 fr.txt")
    assert not (tmp_path / "runs" / "x" / "prepared").exists()
