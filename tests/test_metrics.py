import json
import types

import pytest

from bertjax import metrics
from bertjax.models import bert


def test_flops_formula_base_seq128():
    cfg = bert.BertConfig.from_dict(bert.model_config("base"))
    f = metrics.pretraining_flops_per_sequence(cfg, 128, 20)
    h, v, layers, t = 768, 30522, 12, 128
    per_token = 6 * layers * 12 * h * h + 12 * layers * t * h
    expected = t * per_token + 6 * 20 * (h * h + h * v) + 6 * (h * h + 2 * h)
    assert f == expected
    # Close to the usual 6 x N x tokens rule for the encoder (N ~ 85M non-embedding params).
    assert 6 * 85e6 * 128 < f < 1.3 * 6 * 85e6 * 128 + 6 * 20 * h * v


def test_real_token_figures_count_only_real_tokens_predictions_and_pairs():
    cfg = bert.BertConfig.from_dict(bert.model_config("base"))
    padded = metrics.pretraining_flops_per_sequence(cfg, 128, 20)
    # Full rows, every prediction and one pair per row: the padded figure exactly.
    full = metrics.real_token_figures(cfg, seq_len=128, rows=10, seconds=2.0,
                                      real_tokens=1280, predictions=200, pairs=10,
                                      peak=1e15, devices=1)
    assert full["fill"] == 1.0 and full["real_tokens_per_s"] == 640.0
    assert full["mfu_real"] == pytest.approx(padded * 10 / 2.0 / 1e15, rel=1e-12)
    # Half-empty rows with half the predictions and no NSP (MLM-only).
    h, v, layers = 768, 30522, 12
    per_token = 6 * layers * 12 * h * h + 12 * layers * 128 * h
    half = metrics.real_token_figures(cfg, seq_len=128, rows=10, seconds=2.0, real_tokens=640,
                                      predictions=100, pairs=0, peak=1e15, devices=2)
    expected = (64 * per_token + 6 * 10 * (h * h + h * v)) * 10 / 2.0 / 2e15
    assert half["fill"] == 0.5 and half["mfu_real"] == pytest.approx(expected, rel=1e-12)
    assert metrics.real_token_figures(cfg, seq_len=128, rows=1, seconds=1.0, real_tokens=1,
                                      predictions=1, pairs=1, peak=None,
                                      devices=1)["mfu_real"] is None


def test_peak_flops_table():
    dev = lambda kind: types.SimpleNamespace(device_kind=kind)  # noqa: E731
    assert metrics.peak_flops(dev("NVIDIA H100 80GB HBM3")) == 989e12
    assert metrics.peak_flops(dev("NVIDIA H100 PCIe")) == 756e12
    assert metrics.peak_flops(dev("TPU v4")) == 275e12
    assert metrics.peak_flops(dev("cpu")) is None


def test_writer_writes_jsonl_and_tensorboard(tmp_path):
    w = metrics.MetricWriter(str(tmp_path), enabled=True)
    w.write(10, "train", {"loss": 2.5, "mfu": None})
    w.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 10 and rows[0]["loss"] == pytest.approx(2.5)
    assert rows[0]["mfu"] is None
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())


def test_step_timer_leaves_compiles_and_pauses_out(monkeypatch):
    """A fake clock: each step advances it by what it 'costs'."""
    clock = [0.0]
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: clock[0])

    def costs(seconds):
        def fn():
            clock[0] += seconds
            return seconds
        return fn

    seen = set()
    timer = metrics.StepTimer(seen)
    assert timer.step("shape64", costs(5.0), 32) == 5.0  # compiles: timed alone, not counted
    for _ in range(3):
        timer.step("shape64", costs(1.0), 32)
    with timer.paused():                                   # evaluation
        clock[0] += 100.0
    timer.step("shape128", costs(7.0), 32)                 # a new shape compiles
    timer.step("shape128", costs(2.0), 32)
    assert timer.compile_s == 12.0
    assert timer.rate() == pytest.approx(4 * 32 / 5.0)
    assert timer.lap() == pytest.approx(4 * 32 / 5.0)
    timer.step("shape64", costs(0.5), 16)
    assert timer.lap() == pytest.approx(16 / 0.5)         # only the steps since the last lap
    assert seen == {"shape64", "shape128"}
    # A second timer sharing `seen` counts its first steps: those shapes are compiled already.
    other = metrics.StepTimer(seen)
    other.step("shape64", costs(1.0), 8)
    assert other.compile_s == 0.0 and other.rate() == pytest.approx(8.0)
