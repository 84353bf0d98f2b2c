"""Pretrain BERT: `python scripts/pretrain.py --config configs/pretrain.py:tiny --workdir runs/tiny`.

Any config field can be overridden: `--config.train.batch_size=64 --config.data.nsp=False`.
Re-running with the same --workdir resumes from its latest checkpoint.
"""
import logging

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from bertjax import cli, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path:variant).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    # Our progress and results at INFO; the libraries' (Orbax, TFDS) INFO chatter hidden.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("bertjax").setLevel(logging.INFO)
    config = _CONFIG.value
    cli.resolve_data_paths(config.data)
    result = train.train_and_evaluate(config, cli.user_path(_WORKDIR.value))
    if not result.last_train and not result.preempted:
        logging.getLogger("bertjax").info(
            "nothing to train: the workdir's checkpoint is at step %d, config.train.steps=%d",
            result.step, config.train.steps)
        return
    logging.getLogger("bertjax").info(
        "done at step %d%s; last train %s; last eval %s", result.step,
        " (preempted)" if result.preempted else "", train.format_metrics(result.last_train),
        train.format_metrics(result.last_eval))


if __name__ == "__main__":
    cli.run(main)
