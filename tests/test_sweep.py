import json
import os

import pytest

from bertjax import sweep, train
from configs import pretrain


@pytest.mark.parametrize("name", ["mask_rate", "mask_mix", "nsp", "position", "size",
                                  "optimizer", "seeds", "escape_probes"])
def test_every_named_sweep_applies_to_the_config(name):
    base = pretrain.get_config("tiny")
    points = pretrain.get_sweep(name)
    names = [sweep.point_name(p) for p in points]
    assert len(set(names)) == len(points) > 1
    for p in points:
        cfg = sweep.apply_overrides(base, p)
        for key, value in p.items():
            node = cfg
            for part in key.split("."):
                node = node[part]
            assert node == value
    assert pretrain.get_config("tiny").data.mask_rate == 0.15  # the base is not mutated


def test_unknown_sweep_and_field_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown sweep 'maskrate'"):
        pretrain.get_sweep("maskrate")
    with pytest.raises(KeyError, match="no config field 'mask_ratio'"):
        sweep.apply_overrides(pretrain.get_config("tiny"), {"data.mask_ratio": 0.2})


def test_select_points_takes_indices_in_order_and_refuses_others():
    points = pretrain.get_sweep("escape_probes")
    assert sweep.select_points(points, ["2", "0"], "escape_probes") == [points[2], points[0]]
    for bad in ("6", "x", "-1"):
        with pytest.raises(ValueError, match=f"--points '{bad}': expected an index from 0 to 5"):
            sweep.select_points(points, [bad], "escape_probes")


def test_sweep_skips_finished_points_and_resumes_the_rest(tmp_path):
    calls = []

    def fake_train(cfg, workdir):  # stands in for train_and_evaluate: records what it ran
        calls.append((workdir, cfg.data.mask_rate))
        os.makedirs(workdir, exist_ok=True)
        return train.RunResult(step=3, last_train={"loss": 1.0},
                               last_eval={"mlm_loss": cfg.data.mask_rate, "mlm_accuracy": 0.5},
                               preempted=cfg.data.mask_rate == 0.3 and len(calls) < 4)

    points = [{"data.mask_rate": r} for r in (0.1, 0.2, 0.3)]
    base = pretrain.get_config("tiny")
    out = sweep.run_sweep(base, points, str(tmp_path), train_fn=fake_train)
    assert [c[1] for c in calls] == [0.1, 0.2, 0.3] and len(out) == 2  # 0.3 was preempted
    assert not (tmp_path / "mask_rate=0.3" / "result.json").exists()
    out = sweep.run_sweep(base, points, str(tmp_path), train_fn=fake_train)
    assert [c[1] for c in calls] == [0.1, 0.2, 0.3, 0.3] and len(out) == 3
    row = json.loads((tmp_path / "mask_rate=0.3" / "result.json").read_text())
    assert row["eval"]["mlm_loss"] == 0.3
    md = (tmp_path / "summary.md").read_text()
    assert "mask_rate=0.1" in md and "mask_rate=0.3" in md and "0.5000" in md
