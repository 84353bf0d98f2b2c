"""Pretrain BERT: `python scripts/pretrain.py --config configs/pretrain.py:tiny --workdir runs/tiny`.

Any config field can be overridden: `--config.train.batch_size=64 --config.data.nsp=False`.
Re-running with the same --workdir resumes from its latest checkpoint.
"""
import logging

from absl import app, flags
from ml_collections import config_flags

from bertjax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path:variant).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    result = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    logging.info("done at step %d; last train %s; last eval %s", result.step, result.last_train,
                 result.last_eval)


if __name__ == "__main__":
    app.run(main)
