"""scripts/gpu_report.py: the one command for a lent GPU, run here at micro sizes (--smoke)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from bertjax import gpu_report, step_benchmark

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, cwd):
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in f)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_report.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # 2.5-4 min on 2 busy cores, nearly all of it compiling
def test_smoke_runs_every_part_and_prints_one_json(tmp_path):
    p = _run("--smoke", "--markdown=report.md", "--workdir=work", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout)  # stdout is the JSON document and nothing else
    gpu = report["device"]["backend"] == "gpu"  # on a GPU box the cuDNN parts run too
    assert report["smoke"] and (gpu or report["device"]["peak_bf16_flops"] is None)
    rows = report["throughput"]
    assert [(r["seq"], r["attention_impl"], r["packed_sequences_per_row"]) for r in rows] == [
        (16, "xla", 0), (16, "cudnn", 0), (32, "xla", 0), (32, "cudnn", 0), (32, "xla", 2)]
    for r in rows:
        if r["attention_impl"] == "cudnn" and not gpu:
            assert r["status"] == gpu_report.NO_GPU
        else:
            assert r["status"] == "ok" and r["seq_per_s"] > 0 and (gpu or r["mfu"] is None), r
            assert r["tokens_per_s"] == pytest.approx(r["seq_per_s"] * r["seq"])
            assert r["dtype"] == "bfloat16" and r["mode"] == "jit" and r["step_memory_bytes"] > 0
    num = report["numerics"]
    for dtype, tol in (("bfloat16", 0.1), ("float32", 1e-4)):
        assert gpu or num[dtype]["cudnn"] == gpu_report.NO_GPU
        assert 0 <= num[dtype]["einsum"]["output"] < tol, num[dtype]
        assert 0 <= max(num[dtype]["einsum"][f"grad_{n}"] for n in "qkv") < tol
    pre = report["pretrain"]
    assert pre["status"] == "ok", pre
    assert pre["resumed_at_half"] and pre["checkpoints"] == [3, 6] and pre["steps"] == 6
    assert pre["last_loss"] < pre["first_loss"]
    glue = report["glue"]
    assert glue["status"] == "ok" and glue["train_examples_per_s"] > 0, glue
    md = (tmp_path / "report.md").read_text()
    assert "| 16 | cudnn | no |" in md and "GLUE fine-tuning: ok" in md
    assert gpu or "skipped: no GPU" in md


def test_refuses_a_workdir_that_is_not_empty(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "old.txt").write_text("kept")
    p = _run("--smoke", "--workdir=work", cwd=tmp_path)
    assert p.returncode != 0 and "--workdir=" in p.stderr and "absent or empty" in p.stderr
    assert (tmp_path / "work" / "old.txt").read_text() == "kept"
    assert not (tmp_path / "gpu_report.md").exists()


def test_largest_batch_steps_down_on_out_of_memory(monkeypatch):
    import jax
    n = jax.device_count()  # the listed batches are per device
    tried = []

    def fake_bench(config, batch, seq, preds, steps, packed=0):
        tried.append(batch)
        if batch > 4 * n:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
        return (lambda: None), (lambda: {"batch": batch, "seq_per_s": 1.0})

    monkeypatch.setattr(step_benchmark, "bench", fake_bench)
    row = gpu_report.largest_batch(gpu_report.SMOKE, 16, "xla")
    assert tried == [8 * n, 4 * n] and row["status"] == "ok" and row["batch"] == 4 * n
    assert row["batches_out_of_memory"] == [8 * n]

    def broken(*a, **k):
        raise ValueError("not a memory problem")

    monkeypatch.setattr(step_benchmark, "bench", broken)
    row = gpu_report.largest_batch(gpu_report.SMOKE, 16, "xla")
    assert row["status"].startswith("error: ValueError: not a memory problem")


def test_synthetic_packed_batch_keeps_sequences_apart():
    import numpy as np
    b = step_benchmark.synthetic_batch(np.random.default_rng(0), 100, 2, 16, 3, packed=2)
    assert b["sequence_ids"][0].tolist() == [1] * 8 + [2] * 8
    assert b["position_ids"][0].tolist() == list(range(8)) * 2
    assert b["cls_positions"][0].tolist() == [0, 8] and b["nsp_label"].shape == (2, 2)


def test_a_spent_budget_skips_what_is_left_and_still_reports(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_report, "attention_numerics", lambda shape: {"shape_bshd": shape})
    report = gpu_report.run(smoke=True, budget_s=0.0, workdir=str(tmp_path))
    assert len(report["throughput"]) == 5
    assert all(r["status"].startswith("skipped: the report's time budget")
               for r in report["throughput"])
    assert report["pretrain"]["status"].startswith("skipped") and "pretrain" not in report["seconds"]
    assert report["glue"]["status"].startswith("skipped") and not any(tmp_path.iterdir())
    md = gpu_report.markdown(report)
    assert "| 32 | xla | 2 | - |" in md and "Pretraining: skipped" in md
