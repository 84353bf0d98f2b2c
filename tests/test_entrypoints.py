"""The entry points as the README runs them (issue 11): subprocesses with the README's flags and
relative paths, from a working directory that is not the repository (absolute script and config
paths, as `python /path/to/bertjax/scripts/pretrain.py --config /path/to/.../pretrain.py:tiny`
is typed from elsewhere), and from the repository root where the README implies it.

Sizes are smoke-sized through --config overrides; the paths and flags are the README's. One tiny
pretraining run (module fixture) feeds the fine-tuning, export and sweep tests.
"""
import json
import os
import pathlib
import random
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
PRETRAIN = f"{REPO / 'configs' / 'pretrain.py'}:tiny"
GLUE = f"{REPO / 'configs' / 'glue.py'}:SST-2,tiny"
# A few steps of the README's tiny run; checkpoints every 2 steps so that a stop and a rerun
# show resuming. The train.* fields are not part of a workdir's identity, so reruns accept them.
TINY = ["--config.train.batch_size=8", "--config.train.log_every=1",
        "--config.train.eval_every=1000", "--config.train.eval_steps=1",
        "--config.train.checkpoint_every=2"]
GLUE_TINY = ["--config.max_train_examples=0", "--config.eval_batch_size=16"]


def _env() -> dict:
    env = dict(os.environ)
    # Users run on their real devices, not the 8 simulated ones tests/conftest.py sets up.
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def run(script: str, *args: str, cwd, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs scripts/<script> (absolute path, or as given when it is relative) in `cwd`; fails
    the test with the command's stderr unless it exits 0."""
    path = script if script.startswith("scripts/") else str(SCRIPTS / script)
    cmd = [sys.executable, path, *args]
    p = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        pytest.fail(f"{' '.join(cmd)}\n(cwd {cwd}) exited {p.returncode}; stderr ends:\n"
                    f"{p.stderr[-4000:]}", pytrace=False)
    return p


def _train_steps(workdir: pathlib.Path) -> list[int]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if r["split"] == "train" and "loss" in r]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> pathlib.Path:
    """A user's working directory outside the repository."""
    return tmp_path_factory.mktemp("user")


@pytest.fixture(scope="module")
def pretrained(user_dir):
    """The README's first command from `user_dir`, stopped after 2 steps, then run again to 4:
    (first run, second run)."""
    first = run("pretrain.py", "--config", PRETRAIN, "--workdir", "runs/tiny",
                "--config.train.steps=2", *TINY, cwd=user_dir)
    second = run("pretrain.py", "--config", PRETRAIN, "--workdir", "runs/tiny",
                 "--config.train.steps=4", *TINY, cwd=user_dir)
    return first, second


@pytest.mark.slow
def test_pretrain_writes_checkpoints_and_resumes(user_dir, pretrained):
    first, second = pretrained
    workdir = user_dir / "runs" / "tiny"
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]
    assert "resumed" not in first.stderr
    assert "resumed from" in second.stderr and "at step 2" in second.stderr
    assert "done at step 4" in second.stderr
    # Steps 1-2 from the first run, 3-4 from the second: nothing repeated, nothing skipped.
    assert _train_steps(workdir) == [1, 2, 3, 4]
    # The repository's default tokenizer was found from outside the repository.
    config = json.loads((workdir / "config.json").read_text())
    assert config["data"]["tokenizer"] == str(REPO / "tokenizers" / "enwiki_30522_unigram.model")


def _corpus_lines() -> list[str]:
    """Two documents in the BERT layout, from the built-in corpus's sentences."""
    from bertjax.data import corpus
    source = corpus.open_corpus("default")
    sentences = [s for d in source.documents() for s in corpus.sentences(d, False)][:800]
    return sentences[:400] + [""] + sentences[400:]


def test_train_tokenizer_from_repo_root_then_prepare_from_elsewhere(user_dir):
    (user_dir / "books").mkdir()
    (user_dir / "books" / "part1.txt").write_text("\n".join(_corpus_lines()) + "\n")
    # README step 1, run from the repository root with relative paths (here to user_dir).
    rel = os.path.relpath(user_dir, REPO)
    run("scripts/train_tokenizer.py", f"--corpus={rel}/books/*.txt", "--corpus_format=bert",
        f"--output={rel}/tokenizers/books_200", "--vocab_size=200", cwd=REPO)
    assert (user_dir / "tokenizers" / "books_200.model").is_file()
    assert "--vocab_size=200" in (user_dir / "tokenizers" / "books_200.md").read_text()
    # README step 2 from user_dir: its stdout is JSON and nothing else.
    p = run("prepare_pretraining_data.py", "--config", PRETRAIN,
            "--config.data.corpus=books/*.txt", "--config.data.corpus_format=bert",
            "--config.data.tokenizer=tokenizers/books_200.model", "--output=prepared/books",
            cwd=user_dir)
    stats = json.loads(p.stdout)
    assert stats["prepared_dir"] == str(user_dir / "prepared" / "books")
    assert stats["tokenizer"]["path"] == "books_200.model"
    assert stats["stats"]["documents"] == 2
    assert (user_dir / "prepared" / "books").is_dir()


def _write_sst2(root: pathlib.Path) -> None:
    r = random.Random(0)
    words = "the a film movie plot actor good bad great boring happy sad was is very".split()
    sent = lambda: " ".join(r.choice(words) for _ in range(r.randint(3, 8)))  # noqa: E731
    task = root / "SST-2"
    task.mkdir(parents=True)
    for name, n in (("train.tsv", 48), ("dev.tsv", 16)):
        rows = [f"{sent()} \t{r.randint(0, 1)}" for _ in range(n)]
        (task / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (task / "test.tsv").write_text(
        "index\tsentence\n" + "\n".join(f"{i}\t{sent()}" for i in range(8)) + "\n")


@pytest.fixture(scope="module")
def glue_dir(user_dir) -> str:
    _write_sst2(user_dir / "glue")
    return "glue"


@pytest.mark.slow
def test_finetune_random_and_pretrained_then_compare(user_dir, pretrained, glue_dir):
    """The README's worked path: fine-tune from runs/tiny (no --tokenizer) and from random
    initialisation, then compare_glue."""
    p = run("finetune_glue.py", "--config", GLUE, *GLUE_TINY, "--glue_dir", glue_dir,
            "--init_checkpoint", "runs/tiny", "--workdir", "runs/glue_sst2_pretrained",
            cwd=user_dir)
    assert "SST-2" in p.stdout  # the summary table
    run("finetune_glue.py", "--config", GLUE, *GLUE_TINY, "--glue_dir", glue_dir,
        "--workdir", "runs/glue_sst2_random", cwd=user_dir)
    for name, init in (("glue_sst2_pretrained", str(user_dir / "runs" / "tiny")),
                       ("glue_sst2_random", "random")):
        results = json.loads((user_dir / "runs" / name / "SST-2" / "results.json").read_text())
        assert results["init"].startswith(init), results["init"]
    p = run("compare_glue.py", "--workdirs", "runs/glue_sst2_pretrained,runs/glue_sst2_random",
            "--labels", "pretrained tiny (4 steps),random init", cwd=user_dir)
    assert "| Task | Metric | pretrained tiny (4 steps) | random init |" in p.stdout
    assert "| SST-2 |" in p.stdout


@pytest.mark.interop
@pytest.mark.slow
def test_convert_import_then_finetune_without_tokenizer(user_dir, glue_dir):
    """README, "Checkpoint interop": import a Hugging Face BERT directory, then "imported
    checkpoints fine-tune with the same GLUE command" -- no --tokenizer."""
    pytest.importorskip("torch", reason="building a Hugging Face BERT needs torch")
    pytest.importorskip("transformers", reason="building a Hugging Face BERT needs transformers")
    from convert.conftest import make_hf  # tests/convert: the tiny random BERT other tests use
    make_hf(user_dir / "hf_bert", max_position_embeddings=64)
    run("convert_checkpoint.py", "--from=hf", "--src=hf_bert", "--out=imported/bert_base",
        cwd=user_dir)
    assert (user_dir / "imported" / "bert_base" / "vocab.txt").is_file()
    run("finetune_glue.py", "--config", GLUE, *GLUE_TINY, "--glue_dir", glue_dir,
        "--init_checkpoint", "imported/bert_base", "--workdir", "runs/glue_sst2_imported",
        cwd=user_dir)
    results = json.loads(
        (user_dir / "runs" / "glue_sst2_imported" / "SST-2" / "results.json").read_text())
    assert results["tokenizer"]["kind"] == "wordpiece"


@pytest.mark.interop
@pytest.mark.slow
def test_convert_export(user_dir, pretrained):
    pytest.importorskip("tokenizers", reason="the export writes tokenizer.json with tokenizers")
    run("convert_checkpoint.py", "--to=hf", "--src=runs/tiny", "--out=exports/tiny_hf",
        cwd=user_dir)
    out = user_dir / "exports" / "tiny_hf"
    assert json.loads((out / "config.json").read_text())["model_type"] == "bert"
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


@pytest.mark.slow
def test_sweep_runs_and_skips_finished_points(user_dir, pretrained):
    args = ["--config", PRETRAIN, "--sweep", "nsp", "--workdir", "runs/sweep_nsp",
            "--config.train.steps=1", "--config.data.prepared_dir=runs/tiny/prepared", *TINY]
    run("sweep.py", *args, cwd=user_dir)
    rows = (user_dir / "runs" / "sweep_nsp" / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and (user_dir / "runs" / "sweep_nsp" / "summary.md").is_file(), rows
    again = run("sweep.py", *args, cwd=user_dir)
    assert again.stderr.count("done already, skipped") == 2


@pytest.mark.slow  # ~34 s: benchmark_data runs twelve settings
def test_benchmark_scripts_print_only_json(user_dir):
    docs = [_corpus_lines()[i:i + 20] for i in range(0, 400, 20)]  # 20 documents
    (user_dir / "bench_corpus.txt").write_text("\n\n".join("\n".join(d) for d in docs) + "\n")
    p = run("benchmark_data.py", "--corpus=bench_corpus.txt", "--batches=2", "--batch_size=4",
            "--workers=1", cwd=user_dir)
    data = json.loads(p.stdout)
    # 5 unpacked settings, 6 packed (NSP / MLM-only / full sentences at 128 and 512), 1 packed
    # with whole-word masking.
    assert data["prepare"] and len(data["batches"]) == 12
    assert {b["packing"] for b in data["batches"]} == {"none", "sequences", "full_sentences"}
    p = run("benchmark.py", "--config", PRETRAIN, "--batch=8", "--seq=16", "--predictions=2",
            "--steps=1", "--repeats=1", cwd=user_dir)
    result = json.loads(p.stdout)["bertjax"]
    assert result["seq_per_s"] > 0 and result["batch"] == 8 and result["seq"] == 16
