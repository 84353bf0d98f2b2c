"""Fine-tune and evaluate on any task: GLUE's nine, SQuAD v1.1 / v2.0.

  python scripts/finetune.py --config configs/finetune.py:<task>[,preset...] --data_dir DIR \
      --init_checkpoint CKPT --workdir DIR [--tokenizer MODEL]

DIR/<task>/ holds the task's files (GLUE's download layout; SQuAD's train-v1.1.json and
dev-v1.1.json). `--config configs/finetune.py:all` runs every GLUE task found under --data_dir
and writes one summary. An empty --init_checkpoint fine-tunes from random initialisation (the
baseline); the model size then comes from the config and the vocabulary from the tokenizer.
scripts/finetune_glue.py, configs/glue.py and --glue_dir are the same under their old names.
"""
from absl import flags
from ml_collections import config_flags

from bertjax import cli
from bertjax.finetune import grid

config_flags.DEFINE_config_file("config", None, "configs/finetune.py:<task>[,preset...]",
                                lock_config=True)
flags.DEFINE_string("data_dir", None, "task data: <data_dir>/<task>/ (GLUE TSVs, SQuAD JSON; "
                    "or a TFDS data_dir with --config.source=tfds)")
flags.DEFINE_string("glue_dir", None, "the old name of --data_dir")
flags.DEFINE_string("init_checkpoint", "", "bertjax checkpoint (a pretraining workdir or its "
                    "checkpoints/ folder); empty = random initialisation")
flags.DEFINE_string("workdir", None, "where results, logs and prediction files go")
flags.DEFINE_string("tokenizer", "", "tokenizer model or vocabulary (default: config.tokenizer; "
                    "empty: the checkpoint's own)")
flags.mark_flags_as_required(["config", "workdir"])
flags.register_multi_flags_validator(
    ["data_dir", "glue_dir"], lambda f: (f["data_dir"] is None) != (f["glue_dir"] is None),
    message="give the task data as --data_dir (or its old name --glue_dir), exactly once")


def main(argv):
    del argv
    config = flags.FLAGS.config
    config.tokenizer = cli.repo_file(config.tokenizer)  # '' (the checkpoint's own) stays ''
    workdir = cli.user_path(flags.FLAGS.workdir)
    data_dir = flags.FLAGS.data_dir if flags.FLAGS.data_dir is not None else flags.FLAGS.glue_dir
    summary = grid.run(config, cli.user_path(data_dir),
                       cli.user_path(flags.FLAGS.init_checkpoint), workdir,
                       cli.repo_file(flags.FLAGS.tokenizer))
    with open(f"{workdir}/summary.md", encoding="utf-8") as f:
        print(f.read())
    return 0 if summary["tasks"] else 1


if __name__ == "__main__":
    cli.run(main)
