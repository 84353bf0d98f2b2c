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
