"""TFDS as a fine-tuning source (`source='tfds'`): the records of a prepared TFDS split, for
imdb_reviews (imdb.load_tfds) and the GLUE tasks (glue.tasks.load_task_tfds).

A dataset prepared as array_record (`tfds build NAME --file_format=array_record`) is read by
random access, without TensorFlow (tfds.data_source); one prepared in TFDS's default TFRecord
format is read through `as_dataset`, which needs TensorFlow. Nothing is ever downloaded: these
machines have no network, and a download belongs in its own step, not inside a training run.
"""
from __future__ import annotations

from typing import Any, Sequence


class TfdsSourceError(ValueError):
    pass


def builder(name: str, data_dir: str | None = None):
    import tensorflow_datasets as tfds
    if name.split("/")[0] == "glue":
        # TFDS registers its GLUE builder only once its module is imported.
        import tensorflow_datasets.text.glue  # noqa: F401
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # TFDS appends its whole catalogue: keep the first line
        reason = str(e).strip().split("\n")[0]
        raise TfdsSourceError(f"source='tfds': no TFDS dataset {name!r} ({reason})") from None


def read_records(b, split: str) -> Sequence[dict[str, Any]]:
    """The examples of one split of builder `b`, as dicts of numpy values / bytes / str."""
    try:
        return b.as_data_source(split=split)   # array_record: random access, no TensorFlow
    except NotImplementedError:
        pass                                   # prepared as TFRecord (or not prepared at all)
    name = f"{b.name}/{b.builder_config.name}" if b.builder_config else b.name
    if not b.is_prepared():
        raise FileNotFoundError(
            f"source='tfds': {name} is not prepared in {b.data_dir_root}; prepare it once "
            f"(`tfds build {name} --data_dir=DIR --file_format=array_record`) and pass that "
            "data_dir (nothing is downloaded during a run)")
    try:
        import tensorflow  # noqa: F401  (TFDS reads TFRecord files through TensorFlow)
    except ImportError as e:
        raise ImportError(
            f"source='tfds': {name} in {b.data_dir} is stored as TFRecord, which needs "
            f"tensorflow ({e}); install it (pip install -e '.[tf]') or prepare the dataset "
            "with --file_format=array_record") from None
    import tensorflow_datasets as tfds
    return list(tfds.as_numpy(b.as_dataset(split=split)))
