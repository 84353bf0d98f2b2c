"""Trains a SentencePiece tokenizer with BERT's special tokens at fixed ids.

  python scripts/train_tokenizer.py --corpus=../shared/data/corpus/enwiki \
      --output=tokenizers/enwiki_30522_unigram --vocab_size=30522 --input_sentence_size=300000

Writes <output>.model and its card <output>.md (corpus, settings, date, this command).
"""
import shlex
import sys

from absl import flags

from bertjax import cli
from bertjax.data import tokenizer

_CORPUS = flags.DEFINE_string("corpus", "default", "'default', a path/directory/glob or tfds:NAME")
_FORMAT = flags.DEFINE_enum("corpus_format", "auto", ["auto", "bert", "wikiextractor", "files"],
                            "layout of local corpus files")
_OUTPUT = flags.DEFINE_string("output", None, "output prefix, e.g. tokenizers/mine", required=True)
_VOCAB = flags.DEFINE_integer("vocab_size", 30522, "vocabulary size, special tokens included")
_TYPE = flags.DEFINE_enum("model_type", "unigram", list(tokenizer.MODEL_TYPES), "algorithm")
_LOWER = flags.DEFINE_bool("lowercase", False, "case-fold during normalisation (uncased model)")
_COVERAGE = flags.DEFINE_float("character_coverage", 0.9995, "share of characters kept")
_SAMPLE = flags.DEFINE_integer("input_sentence_size", 0,
                               "sentences sampled for training (0 = all)")
_MAX_BYTES = flags.DEFINE_integer("max_corpus_bytes", 0, "read at most ~this much text (0 = all)")


def main(argv):
    del argv
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    model = tokenizer.train_from_corpus(
        cli.user_path(_CORPUS.value), cli.user_path(_OUTPUT.value), corpus_format=_FORMAT.value, vocab_size=_VOCAB.value,
        model_type=_TYPE.value, lowercase=_LOWER.value, character_coverage=_COVERAGE.value,
        input_sentence_size=_SAMPLE.value, max_corpus_bytes=_MAX_BYTES.value, command=command)
    print(f"wrote {model} and {model.with_suffix('.md')}")


if __name__ == "__main__":
    cli.run(main)
