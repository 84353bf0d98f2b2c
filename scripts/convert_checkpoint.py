"""Convert BERT checkpoints between Hugging Face / Google and bertjax.

Import (writes OUT/checkpoints, read by checkpoint.load_pretrained(OUT), and OUT/vocab.txt +
OUT/tokenizer_config.json, the WordPiece tokenizer):
  python scripts/convert_checkpoint.py --from=hf --src=path/to/hf_bert_dir --out=imported/bert
  python scripts/convert_checkpoint.py --from=google --src=uncased_L-12_H-768_A-12 --out=imported/g
Export (a directory transformers.BertForPreTraining.from_pretrained loads; the tokenizer as
vocab.txt for WordPiece, tokenizer.json for unigram SentencePiece):
  python scripts/convert_checkpoint.py --to=hf --src=WORKDIR_OR_CKPT --out=hf_export
"""
from absl import app, flags, logging

from bertjax import cli

flags.DEFINE_enum("from", None, ["hf", "google"], "Import from this format into bertjax.")
flags.DEFINE_enum("to", None, ["hf"], "Export a bertjax checkpoint to this format.")
flags.DEFINE_string("src", None, "Source directory (HF/Google model dir, or bertjax workdir / "
                    "checkpoint directory for --to).", required=True)
flags.DEFINE_string("out", None, "Output directory; must not exist or be empty.", required=True)
flags.DEFINE_bool("scan_layers", False, "Import: store the layers stacked for scan_layers=True.")
flags.DEFINE_integer("seed", 0, "Import: seed for parts the source lacks (pooler, heads).")
flags.DEFINE_enum("do_lower_case", "auto", ["auto", "true", "false"],
                  "Import: WordPiece lower-casing; auto = tokenizer_config.json, the Google "
                  "directory name, else inferred from the vocabulary.")
flags.DEFINE_string("tokenizer", None, "Export: the checkpoint's tokenizer file (vocab.txt or "
                    "its directory, or a SentencePiece .model); default: the run config's "
                    "data.tokenizer, else the checkpoint directory.")
flags.DEFINE_bool("skip_tokenizer", False, "Export: write the model without tokenizer files.")
flags.DEFINE_integer("step", None, "Export: checkpoint step (default: latest).")

FLAGS = flags.FLAGS


def main(argv):
    del argv
    from bertjax.convert import google, hf

    source, target = FLAGS["from"].value, FLAGS.to
    if bool(source) == bool(target):
        raise app.UsageError("give exactly one of --from=hf|google or --to=hf")
    src, out = cli.user_path(FLAGS.src), cli.user_path(FLAGS.out)
    lower = {"auto": None, "true": True, "false": False}[FLAGS.do_lower_case]
    if source:
        module = hf if source == "hf" else google
        out = module.import_checkpoint(src, out, scan_layers=FLAGS.scan_layers,
                                       seed=FLAGS.seed, do_lower_case=lower)
    else:
        tokenizer = cli.repo_file(FLAGS.tokenizer) if FLAGS.tokenizer else None
        out = hf.export_checkpoint(src, out, tokenizer=tokenizer,
                                   step=FLAGS.step, skip_tokenizer=FLAGS.skip_tokenizer)
    logging.info("done: %s", out)


if __name__ == "__main__":
    cli.run(main)
