"""Data pipeline benchmark; prints JSON.

  python scripts/benchmark_data.py --config=configs/pretrain.py:tiny \
      --corpus=../shared/data/corpus/enwiki \
      --small_corpus='../shared/data/corpus/enwiki/AA/wiki_0[0-9]'

Measures preparation (text -> tokenized documents) on --small_corpus and --corpus (peak memory
must not grow with corpus size), then train-time batches (pairing + masking + batching) from
the prepared --corpus at seq 128 and 512, with one in-process pipeline (per-core figures),
unpacked and packed (data.packing); `fill` is the share of positions holding real tokens.
"""
import json
import os
import shutil
import tempfile

from absl import flags
from ml_collections import config_flags

from bertjax import cli
from bertjax.data import benchmark

_CONFIG = config_flags.DEFINE_config_file(
    "config", cli.repo_file("configs/pretrain.py") + ":tiny", "config whose data section is used",
    lock_config=True)
_CORPUS = flags.DEFINE_string("corpus", "default", "corpus to prepare and read")
_SMALL = flags.DEFINE_string("small_corpus", "", "a smaller corpus to compare peak memory with")
_WORKERS = flags.DEFINE_integer("workers", 0, "preparation processes (0 = all cores)")
_BATCHES = flags.DEFINE_integer("batches", 200, "batches timed per setting")
_BATCH = flags.DEFINE_integer("batch_size", 256, "rows per batch")


def main(argv):
    del argv
    cfg = _CONFIG.value.data
    cli.resolve_data_paths(cfg)
    results = {"prepare": [], "batches": []}
    work = tempfile.mkdtemp(prefix="bertjax_bench_")
    try:
        with cli.stdout_to_stderr():
            _measure(cfg, work, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))


def _measure(cfg, work: str, results: dict) -> None:
    for name, corpus in (("small", cli.user_path(_SMALL.value)),
                         ("main", cli.user_path(_CORPUS.value))):
        if corpus:
            results["prepare"].append(benchmark.prepare_throughput(
                corpus, cfg.tokenizer, _WORKERS.value, os.path.join(work, name)))
    # (prepared corpus, seq len, max predictions, config overrides); the small corpus once,
    # to show that the pipeline's memory does not grow with the corpus.
    settings = [("main", 128, 20, {}), ("main", 512, 80, {}),
                ("main", 128, 20, {"whole_word_mask": True}), ("main", 128, 20, {"nsp": False}),
                ("main", 512, 80, {"nsp": False})]
    # Packed (data.packing): fill for NSP and MLM-only at both lengths.
    for seq, preds in ((128, 20), (512, 80)):
        settings += [("main", seq, preds, {"packing": "sequences"}),
                     ("main", seq, preds, {"nsp": False, "packing": "sequences"}),
                     ("main", seq, preds, {"nsp": False, "packing": "full_sentences"})]
    settings.append(("main", 512, 80, {"packing": "sequences", "whole_word_mask": True}))
    if _SMALL.value:
        settings.append(("small", 128, 20, {}))
    for name, seq, preds, overrides in settings:
        c = cfg.copy_and_resolve_references()
        c.unlock()
        c.update(overrides)
        c.num_workers = 0
        result = benchmark.batch_throughput(
            c, os.path.join(work, name), max_seq_len=seq, max_predictions=preds,
            batch_size=_BATCH.value, num_batches=_BATCHES.value)
        results["batches"].append({"corpus": name, **result})


if __name__ == "__main__":
    cli.run(main)
