"""GLUE fine-tuning on 8 (simulated) devices, sharded jit or pmap, gives what one device gives."""
import json

import jax
import numpy as np
import pytest
from glue_fixtures import write_keyword_task

from bertjax import parallel
from bertjax.finetune import trainer, pretrained
from bertjax.finetune.glue import data, tasks
from bertjax.models import bert


@pytest.fixture
def setup(tmp_path, micro, glue_tokenizer):
    # 40 training rows at batch 16: the last batch is half padding, so on 8 devices some
    # devices hold only zero-weight rows; the loss must still average over the global batch.
    root = write_keyword_task(tmp_path / "glue", n_train=40, n_dev=20, n_test=10)
    spec = tasks.get_task("RTE")
    config = micro("RTE", max_train_examples=0, epochs=2, eval_every=2, buckets=(16,))
    cfg = bert.BertConfig.from_dict(dict(config.model.to_dict(),
                                         vocab_size=glue_tokenizer.vocab_size))
    init = pretrained.Init(cfg, None, glue_tokenizer, "random")
    inputs = data.prepare_inputs(config, spec, tasks.load_task(spec, root), glue_tokenizer)
    return config, init, inputs


def _tuner(setup, mode, devices):
    config, init, inputs = setup
    config = config.copy_and_resolve_references()
    config.parallel.mode = mode
    return trainer.FineTuner(config, init, inputs, 16, mesh=parallel.make_mesh(devices))


@pytest.mark.slow
def test_a_whole_run_on_eight_devices_matches_one(setup, tmp_path):
    runs = {}
    for name, mode, devices in [("one", "jit", jax.devices()[:1]), ("jit", "jit", None),
                                ("pmap", "pmap", None)]:
        r = _tuner(setup, mode, devices or jax.devices()).run(lr=1e-3, seed=0,
                                                               log_dir=tmp_path / name)
        rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").open()]
        r["losses"] = [row["loss"] for row in rows if row["split"] == "train"]
        runs[name] = r
    one = runs["one"]
    assert one["steps"] == 6 and len(one["losses"]) == 6  # 3 batches per epoch, 2 epochs
    for name in ("jit", "pmap"):
        np.testing.assert_allclose(runs[name]["losses"], one["losses"], rtol=1e-5)
        assert runs[name]["history"] == one["history"]
        for k, v in one["test_predictions"].items():
            np.testing.assert_array_equal(runs[name]["test_predictions"][k], v)
