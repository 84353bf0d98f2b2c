"""Tokenizes a corpus once into a TFDS dataset of documents (array_record), in parallel.

  python scripts/prepare_pretraining_data.py --config=configs/pretrain.py:tiny \
      --config.data.corpus=../shared/data/corpus/enwiki --output=/tmp/enwiki_prepared

Uses the config's data section (corpus, corpus_format, tokenizer, eval_fraction,
prepare_workers). Resumes an interrupted run; refuses a directory prepared with another
tokenizer. Prints the statistics as JSON (and nothing else) on stdout.
"""
import json

from absl import app, flags
from ml_collections import config_flags

from bertjax import cli
from bertjax.data import prepare

_CONFIG = config_flags.DEFINE_config_file("config", None, "e.g. configs/pretrain.py:tiny",
                                          lock_config=True)
_OUTPUT = flags.DEFINE_string("output", None, "prepared dataset directory (default: "
                              "config.data.prepared_dir)")


def main(argv):
    del argv
    data = _CONFIG.value.data
    cli.resolve_data_paths(data)
    output = cli.user_path(_OUTPUT.value) if _OUTPUT.value else data.prepared_dir
    if not output:
        raise app.UsageError("set --output or --config.data.prepared_dir")
    with cli.stdout_to_stderr():
        meta = prepare.prepare(data.corpus, data.tokenizer, output,
                               corpus_format=data.corpus_format, eval_fraction=data.eval_fraction,
                               num_workers=data.prepare_workers, tfds_data_dir=data.tfds_data_dir)
    print(json.dumps({"prepared_dir": output, **meta}, indent=1))


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    cli.run(main)
