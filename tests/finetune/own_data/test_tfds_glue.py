"""GLUE through TFDS (glue.tasks.load_task_tfds): the real TFDS builder and data-source calls on
mocked data, so nothing is downloaded and TensorFlow is not needed."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bertjax.finetune.glue import tasks


@pytest.mark.parametrize("task", ["MRPC", "STS-B", "CoLA"])
def test_single_dev_tasks(task):
    spec = tasks.get_task(task)
    with tfds.testing.mock_data(num_examples=6):
        data = tasks.load_task_tfds(spec, "/nonexistent/tfds")
    assert len(data.train) == 6 and list(data.dev) == [""] and len(data.dev[""]) == 6
    assert list(data.test) == [task] and data.test[task].labels is None
    split = data.dev[""]
    assert all(isinstance(t, str) for t in split.text_a)
    assert (split.text_b is None) == (spec.text_b is None)
    if spec.is_regression:
        assert split.labels.dtype == np.float32
    else:
        assert split.labels.dtype == np.int32 and set(split.labels) <= set(range(spec.num_labels))


def test_mnli_splits_and_label_names():
    spec = tasks.get_task("MNLI")
    with tfds.testing.mock_data(num_examples=9):
        data = tasks.load_task_tfds(spec)
    assert sorted(data.dev) == ["m", "mm"] and sorted(data.test) == ["MNLI-m", "MNLI-mm"]
    assert data.notes == ["no AX.tsv submission from TFDS"]
    # TFDS's names (entailment, neutral, contradiction) mapped onto ours, by name.
    assert set(data.train.labels) <= {0, 1, 2} and data.train.text_b is not None
