"""Fine-tune and evaluate on GLUE.

  python scripts/finetune_glue.py --config configs/glue.py:SST-2 --glue_dir DIR \
      --init_checkpoint CKPT --workdir DIR [--tokenizer MODEL]

`--config configs/glue.py:all` runs every task found under --glue_dir and writes one summary.
An empty --init_checkpoint fine-tunes from random initialisation (the baseline); the model size
then comes from the config and the vocabulary from the tokenizer.
"""
from absl import flags
from ml_collections import config_flags

from bertjax import cli
from bertjax.finetune import grid

config_flags.DEFINE_config_file("config", None, "configs/glue.py:<task>[,preset...]",
                                lock_config=True)
flags.DEFINE_string("glue_dir", None, "GLUE data: <glue_dir>/<task>/{train,dev,test}.tsv "
                    "(or a TFDS data_dir with --config.source=tfds)")
flags.DEFINE_string("init_checkpoint", "", "bertjax checkpoint (a pretraining workdir or its "
                    "checkpoints/ folder); empty = random initialisation")
flags.DEFINE_string("workdir", None, "where results, logs and submission files go")
flags.DEFINE_string("tokenizer", "", "tokenizer model or vocabulary (default: config.tokenizer; "
                    "empty: the checkpoint's own)")
flags.mark_flags_as_required(["config", "glue_dir", "workdir"])


def main(argv):
    del argv
    config = flags.FLAGS.config
    config.tokenizer = cli.repo_file(config.tokenizer)  # '' (the checkpoint's own) stays ''
    workdir = cli.user_path(flags.FLAGS.workdir)
    summary = grid.run(config, cli.user_path(flags.FLAGS.glue_dir),
                       cli.user_path(flags.FLAGS.init_checkpoint), workdir,
                       cli.repo_file(flags.FLAGS.tokenizer))
    with open(f"{workdir}/summary.md", encoding="utf-8") as f:
        print(f.read())
    return 0 if summary["tasks"] else 1


if __name__ == "__main__":
    cli.run(main)
