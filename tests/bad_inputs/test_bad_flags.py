"""Mistakes in the command line itself, as a user types them: each is one line `error: ...`,
exit code 1, no absl FATAL report or traceback, no library log line, and nothing written
(bertjax/cli.py: run and _parse_flags)."""
import pytest
from bad_input_helpers import REPO, assert_one_line_error, run_script

PRETRAIN = str(REPO / "configs" / "pretrain.py")
GLUE = str(REPO / "configs" / "glue.py")


def _nothing_written(tmp_path, *allowed):
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(allowed)


def test_misspelt_pretraining_size(tmp_path):
    proc = run_script("pretrain.py", f"--config={PRETRAIN}:tinyy", "--workdir=runs/x",
                      cwd=tmp_path)
    assert_one_line_error(proc, f"error: --config={PRETRAIN}:tinyy: unknown model size 'tinyy'; "
                                "expected one of ['tiny', 'mini',")
    _nothing_written(tmp_path)


def test_misspelt_pretraining_preset(tmp_path):
    proc = run_script("pretrain.py", f"--config={PRETRAIN}:tiny,gpuu", "--workdir=runs/x",
                      cwd=tmp_path)
    assert_one_line_error(proc, "Unknown preset 'gpuu' in configs/pretrain.py; expected one of "
                                "cpu_demo, gpu,")
    _nothing_written(tmp_path)


def test_misspelt_glue_task(tmp_path):
    proc = run_script("finetune_glue.py", f"--config={GLUE}:SST2", "--glue_dir=glue",
                      "--workdir=runs/g", cwd=tmp_path)
    assert_one_line_error(proc, f"error: --config={GLUE}:SST2: Unknown GLUE task 'SST2' in "
                                "configs/glue.py; expected one of ['CoLA', 'SST-2',")
    _nothing_written(tmp_path)


@pytest.mark.parametrize("script", ["pretrain.py", "finetune_glue.py"])
def test_missing_config_file(tmp_path, script):
    proc = run_script(script, "--config=configs/pretrian.py:tiny", "--workdir=runs/x",
                      "--glue_dir=g" if script == "finetune_glue.py" else "--traceback=false",
                      cwd=tmp_path)
    assert_one_line_error(proc, "error: --config=configs/pretrian.py:tiny: config file "
                                "configs/pretrian.py not found; expected a Python file with "
                                "get_config(), e.g. configs/pretrain.py:tiny")
    _nothing_written(tmp_path)


def test_missing_config_file_with_an_override(tmp_path):
    # ml_collections fails while applying the override to the config that did not load.
    proc = run_script("pretrain.py", "--config=nope.py", "--workdir=runs/x",
                      "--config.train.steps=3", cwd=tmp_path)
    assert_one_line_error(proc, "error: --config=nope.py: config file nope.py not found")


@pytest.mark.parametrize("script, extra", [("pretrain.py", [f"--config={PRETRAIN}:tiny"]),
                                           ("finetune_glue.py", [f"--config={GLUE}:RTE",
                                                                 "--glue_dir=glue"])])
def test_empty_workdir(tmp_path, script, extra):
    # e.g. --workdir=$RUN with RUN unset: would otherwise be the current directory
    proc = run_script(script, *extra, "--workdir=", cwd=tmp_path)
    assert_one_line_error(proc, "error: --workdir is empty; expected a directory (an unset "
                                "shell variable?)")
    _nothing_written(tmp_path)


def test_missing_required_flag(tmp_path):
    proc = run_script("pretrain.py", f"--config={PRETRAIN}:tiny", cwd=tmp_path)
    assert_one_line_error(proc, "error: --workdir is required")
    _nothing_written(tmp_path)


def test_override_of_the_wrong_type(tmp_path):
    proc = run_script("pretrain.py", f"--config={PRETRAIN}:tiny", "--workdir=runs/x",
                      "--config.train.steps=many", cwd=tmp_path)
    assert_one_line_error(proc, "error: flag --config.train.steps=many: invalid literal for "
                                "int()")
    _nothing_written(tmp_path)


def test_early_failure_shows_no_orbax_log_lines(tmp_path):
    # Loading a checkpoint makes Orbax log its options; the user sees only the error.
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    rows = "index\tsentence1\tsentence2\tlabel\n0\tA man.\tA dog.\tentailment\n"
    for split in ("train", "dev"):
        (tmp_path / "glue" / "RTE" / f"{split}.tsv").write_text(rows)
    (tmp_path / "not_a_checkpoint").mkdir()
    proc = run_script("finetune_glue.py", f"--config={GLUE}:RTE,tiny", "--glue_dir=glue",
                      "--workdir=runs/g", "--init_checkpoint=not_a_checkpoint", cwd=tmp_path)
    assert_one_line_error(proc, "error: no checkpoint found under")


def test_traceback_flag_still_shows_the_original_error(tmp_path):
    proc = run_script("pretrain.py", f"--config={PRETRAIN}:tinyy", "--workdir=runs/x",
                      "--traceback", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert "unknown model size 'tinyy'" in proc.stderr
