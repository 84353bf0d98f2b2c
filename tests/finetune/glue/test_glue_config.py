import os
import pathlib
import subprocess
import sys

import pytest
from glue_fixtures import write_task

from bertjax.finetune import grid

from bertjax.finetune.glue import tasks
from bertjax.models import bert
from configs import glue as glue_config

REPO = str(pathlib.Path(__file__).resolve().parents[3])


@pytest.mark.parametrize("arg", list(tasks.TASK_NAMES) + [
    "all", "sst-2", "SST-2,tiny", "MNLI,feature", "RTE,partial,grid", "all,tiny,gpu"])
def test_glue_configs_are_valid(arg):
    c = glue_config.get_config(arg)
    grid.validate_config(c)  # 8 simulated devices: every batch size divides evenly
    assert c.task in tasks.TASK_NAMES + ("all",)
    bert.BertConfig.from_dict(c.model.to_dict())
    if "tiny" in arg:
        assert c.model.size == "tiny" and c.epochs == 1 and c.num_seeds == 1


def test_defaults_follow_the_bert_paper():
    c = glue_config.get_config("MRPC")
    assert c.learning_rates == (5e-5, 3e-5, 2e-5) and c.batch_sizes == (32,)
    assert c.epochs == 3 and c.warmup_fraction == 0.1
    assert c.model.hidden_dropout_rate == 0.1 and c.mode == "full"


def test_unknown_task_or_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown GLUE task 'SST'"):
        glue_config.get_config("SST")
    with pytest.raises(ValueError, match="Unknown preset 'frozen'"):
        glue_config.get_config("CoLA,frozen")
    c = glue_config.get_config("CoLA")
    c.mode = "frozen"
    with pytest.raises(ValueError, match="config.mode='frozen'"):
        grid.validate_config(c)


@pytest.mark.slow
def test_entry_point_runs_end_to_end(tmp_path, glue_tokenizer_path):
    write_task(tmp_path / "glue", "WNLI")
    micro = ["--config.model.num_layers=1", "--config.model.hidden_size=32",
             "--config.model.num_heads=2", "--config.model.intermediate_size=64",
             "--config.model.hidden_dropout_rate=0", "--config.model.attention_dropout_rate=0",
             "--config.buckets=()", "--config.max_seq_length=32", "--config.max_steps=2",
             "--config.batch_sizes=(8,)", "--config.eval_batch_size=8"]
    cmd = [sys.executable, "scripts/finetune_glue.py", "--config=configs/glue.py:WNLI,tiny",
           f"--glue_dir={tmp_path / 'glue'}", f"--workdir={tmp_path / 'wd'}",
           f"--tokenizer={glue_tokenizer_path}", *micro]
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| WNLI | acc |" in out.stdout
    assert (tmp_path / "wd" / "submission" / "WNLI.tsv").read_text().count("\n") == 4 + 1
    typo = subprocess.run(cmd + ["--config.learning_rate=1e-4"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert typo.returncode != 0 and "learning_rate" in typo.stderr
