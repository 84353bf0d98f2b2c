"""Corpus -> tokenized documents, stored once as a TFDS dataset (array_record, no TensorFlow).

Each record is one document: `tokens` (all its token ids, uint16 when the vocabulary fits) and
`sentence_lengths` (int32, how many of those tokens each sentence has). That is the document as
a list of sentences, stored flat because two flat arrays decode in microseconds where a ragged
list of arrays would not. Splits: 'train' and 'eval' (documents held out by a hash of their
corpus key, or of their group when the corpus groups duplicates, so the hold-out does not depend
on worker count or file order and duplicates stay on one side).

Preparation streams: each worker process reads one work unit (~8 MB of text, see corpus.py),
splits sentences, tokenizes and appends records to its own array_record file, holding at most
one document in memory. Finished units survive a crash in a work directory keyed by the inputs,
so a rerun resumes; the TFDS builder then moves the shards into a temporary dataset directory
that is renamed into place only when complete, so a prepared dataset is never half-written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging as py_logging
import multiprocessing
import os
import pathlib
import shutil
import signal
import sys
import time
from typing import Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from array_record.python import array_record_module
from tensorflow_datasets.core import dataset_builder

from bertjax import dir_lock, records
from bertjax.data import corpus as corpus_lib
from bertjax.data import holdout, prepare_stats
from bertjax.data import tokenizer as tokenizer_lib

_log = py_logging.getLogger("bertjax.prepare")  # shown by the entry points (absl's is not)
NAME = "bertjax_documents"
VERSION = "1.0.0"
SPLITS = ("train", "eval")
# A "sentence" longer than LONG_SENTENCE tokens is a line that was never split (a file without
# line breaks in the BERT layout, a table): the pairing would keep one truncated row of it per
# epoch and drop the rest, so it is cut into SENTENCE_PIECE-token pieces, which fill rows of
# any max_seq_len. Real sentences are far shorter and stay whole.
LONG_SENTENCE = 256
SENTENCE_PIECE = 64


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def features(vocab_size: int) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "tokens": tfds.features.Tensor(shape=(None,), dtype=token_dtype(vocab_size)),
        "sentence_lengths": tfds.features.Tensor(shape=(None,), dtype=np.int32),
    })


def builder_dir(prepared_dir: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(prepared_dir) / NAME / VERSION


def is_prepared(prepared_dir: str | os.PathLike) -> bool:
    return (builder_dir(prepared_dir) / "dataset_info.json").is_file()


def load_builder(prepared_dir: str | os.PathLike):
    """The prepared dataset as a read-only TFDS builder (no bertjax class needed to read it)."""
    d = builder_dir(prepared_dir)
    if not (d / "dataset_info.json").is_file():
        raise FileNotFoundError(f"{str(prepared_dir)!r} holds no prepared dataset (expected "
                                f"{d}/dataset_info.json); run scripts/prepare_pretraining_data.py")
    return tfds.builder_from_directory(str(d))


def metadata(prepared_dir: str | os.PathLike) -> dict:
    return dict(load_builder(prepared_dir).info.metadata or {})


# --------------------------------------------------------------------------------------------
# Work: one unit of the corpus -> one array_record file per split, plus a stats file.

@dataclasses.dataclass(frozen=True)
class _Context:
    """What every unit needs; sent to each worker once, not with every unit."""
    corpus: corpus_lib.Corpus
    tokenizer: tokenizer_lib.Tokenizer
    work_dir: str
    eval_fraction: float


_CONTEXT: _Context | None = None


def _init_worker(context: _Context) -> None:
    global _CONTEXT
    _CONTEXT = context


def _init_pool_worker(context: _Context) -> None:
    # A Ctrl-C in a terminal reaches the whole process group: only the parent handles it (it
    # stops the pool; a rerun redoes the unfinished units), not each worker with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(context)


def _unit_paths(work_dir: str, index: int) -> dict:
    base = os.path.join(work_dir, f"unit-{index:05d}")
    return {"train": base + ".train.array_record", "eval": base + ".eval.array_record",
            "stats": base + ".json"}


def _serializer(vocab_size: int):
    return features(vocab_size).serialize_example


def _run_unit(index_and_unit: tuple[int, corpus_lib.Unit]) -> tuple[int, dict]:
    """Tokenizes one unit; the stats file is written last so its presence means 'done'."""
    index, unit = index_and_unit
    job = _CONTEXT
    paths = _unit_paths(job.work_dir, index)
    tok, dtype = job.tokenizer, token_dtype(job.tokenizer.vocab_size)
    serialize = _serializer(tok.vocab_size)
    read = corpus_lib.ReadStats()
    counts = prepare_stats.unit_counts(SPLITS)
    lowest_train = []  # (hash, record index): candidates to move to eval if it ends up too small
    # CPU time, not wall time: per-core rates stay meaningful on a shared, busy machine.
    clock = time.process_time
    t0 = clock()
    writers = {s: array_record_module.ArrayRecordWriter(paths[s] + ".tmp", "group_size:1")
               for s in SPLITS}
    try:
        for doc in job.corpus.read(unit, read):
            t = clock()
            sentences = corpus_lib.sentences(doc, job.corpus.lines_are_sentences)
            t1 = clock()
            # A "[MASK]" in a document is text, as in BERT's data creation (see tokenizer.py).
            ids = ([s for s in tok.encode_batch(sentences, parse_specials=False) if s]
                   if sentences else [])
            long = sum(len(s) > LONG_SENTENCE for s in ids)
            if long:
                counts["long_sentences_cut"] += long
                ids = _cut_long_sentences(ids)
            counts["split_seconds"] += t1 - t
            counts["tokenize_seconds"] += clock() - t1
            if not ids:
                counts["empty_documents"] += 1
                continue
            lengths = np.fromiter(map(len, ids), np.int32, count=len(ids))
            tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype,
                                 count=int(lengths.sum()))
            u = holdout.unit_interval(doc.holdout_key)  # a group (duplicates) stays on one side
            split = "eval" if u < job.eval_fraction else "train"
            if split == "train":
                lowest_train = sorted(lowest_train + [(u, counts["documents"]["train"])])
                lowest_train = lowest_train[:holdout.MIN_EVAL_DOCUMENTS]
            writers[split].write(serialize({"tokens": tokens, "sentence_lengths": lengths}))
            counts["documents"][split] += 1
            counts["sentences"] += len(ids)
            counts["tokens"] += int(lengths.sum())
    finally:
        for w in writers.values():
            w.close()
    for s in SPLITS:
        os.replace(paths[s] + ".tmp", paths[s])
    stats = {**counts, "bytes": read.bytes, "invalid_utf8": dict(read.invalid_utf8),
             "cpu_seconds": clock() - t0, "lowest_train": lowest_train}
    records.write_json(paths["stats"], stats, indent=None)
    return index, stats


def _cut_long_sentences(ids: list[list[int]]) -> list[list[int]]:
    out = []
    for s in ids:
        if len(s) > LONG_SENTENCE:
            out.extend(s[i:i + SENTENCE_PIECE] for i in range(0, len(s), SENTENCE_PIECE))
        else:
            out.append(s)
    return out


# --------------------------------------------------------------------------------------------
# The TFDS builder.

class Documents(dataset_builder.FileReaderBuilder):
    """Tokenized documents of one corpus by one tokenizer (see the module docstring)."""
    name = NAME
    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "tokens (flat) + sentence_lengths per document."}

    def __init__(self, *, data_dir: str, corpus: corpus_lib.Corpus,
                 tokenizer: tokenizer_lib.Tokenizer, eval_fraction: float = 0.0,
                 num_workers: int = 0, corpus_spec: str = "", progress: bool = True):
        self._corpus, self._tokenizer = corpus, tokenizer
        self._eval_fraction, self._num_workers = eval_fraction, num_workers
        self._corpus_spec, self._progress = corpus_spec, progress
        self.stats: dict = {}
        super().__init__(data_dir=data_dir, file_format="array_record")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=features(self._tokenizer.vocab_size),
            metadata=tfds.core.MetadataDict(),
        )

    # In TFDS's words: "Downloading and preparing dataset Unknown size ...". Nothing downloads.
    def _log_download_bytes(self) -> None:
        _log.info("preparing %s with %s into %s (tokenized once; later runs reuse it)",
                  self._corpus.description, self._tokenizer.identity()["path"], self.data_dir)

    def _log_download_done(self) -> None:
        _log.info("prepared %s: %d documents (%d held out for evaluation)",
                  self.data_dir, self.stats["documents"], self.stats["eval_documents"])

    def work_dir(self) -> pathlib.Path:
        """Where finished units wait across crashes; named by everything that shapes the output."""
        key = json.dumps({"corpus": self._corpus.fingerprint(),
                          "tokenizer": self._tokenizer.sha256,
                          "eval_fraction": self._eval_fraction, "version": VERSION},
                         sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return pathlib.Path(self.data_dir_root) / f".work-{digest}"

    def _download_and_prepare(self, dl_manager, download_config=None) -> None:
        del dl_manager, download_config
        work_dir = self.work_dir()
        work_dir.mkdir(parents=True, exist_ok=True)
        units = self._corpus.units()
        t0 = time.perf_counter()
        context = _Context(self._corpus, self._tokenizer, str(work_dir), self._eval_fraction)
        unit_stats = _run_units(context, units, self._num_workers, self._progress)
        wall = time.perf_counter() - t0
        moved = holdout.eval_top_up(unit_stats, self._eval_fraction)
        splits = []
        for split in SPLITS:
            sign = 1 if split == "eval" else -1
            shards = [(i, s["documents"][split] + sign * len(moved.get(i, ())))
                      for i, s in enumerate(unit_stats)]
            shards = [(i, n) for i, n in shards if n > 0]
            if not shards:
                continue
            template = self._get_filename_template(split)
            num_bytes = 0
            for shard_index, (i, _) in enumerate(shards):
                dst = template.sharded_filepath(shard_index=shard_index, num_shards=len(shards))
                paths = _unit_paths(str(work_dir), i)
                if i in moved:  # written anew; the work dir stays exactly as the workers left it
                    train = _read_all(paths["train"])
                    if split == "train":
                        records = [r for j, r in enumerate(train) if j not in moved[i]]
                    else:
                        records = _read_all(paths["eval"]) if unit_stats[i]["documents"]["eval"] \
                            else []
                        records += [train[j] for j in moved[i]]
                    _write_all(dst, records)
                else:
                    # Not a move: the work stays until TFDS has renamed the dataset into place.
                    _link_or_copy(paths[split], dst)
                num_bytes += os.path.getsize(dst)
            splits.append(tfds.core.SplitInfo(name=split, shard_lengths=[n for _, n in shards],
                                              num_bytes=num_bytes, filename_template=template))
        for i, records in moved.items():
            unit_stats[i]["documents"]["train"] -= len(records)
            unit_stats[i]["documents"]["eval"] += len(records)
        self.stats = prepare_stats.summarise(unit_stats, wall, self._corpus.lines_are_sentences)
        if not any(s.name == "train" for s in splits):
            raise ValueError(
                f"corpus {self._corpus.description} produced no training documents "
                f"({self.stats['documents']} documents, {self.stats['empty_documents']} empty)")
        self.info.set_splits(tfds.core.SplitDict(splits))
        self.info.metadata.update({
            "tokenizer": self._tokenizer.identity(),
            "corpus": self._corpus_spec,
            "corpus_description": self._corpus.description,
            "lines_are_sentences": self._corpus.lines_are_sentences,
            "eval_fraction": self._eval_fraction,
            "stats": self.stats,
        })


def _run_units(context: _Context, units: Sequence[corpus_lib.Unit], num_workers: int,
               progress: bool) -> list[dict]:
    todo, stats = [], [None] * len(units)
    for i, unit in enumerate(units):
        paths = _unit_paths(context.work_dir, i)
        if os.path.exists(paths["stats"]):  # finished by an earlier, interrupted run
            with open(paths["stats"]) as f:
                stats[i] = json.load(f)
        else:
            todo.append((i, unit))
    total = sum(u.nbytes for u in units)
    done_bytes = sum(units[i].nbytes for i, s in enumerate(stats) if s is not None)
    workers = min(num_workers or os.cpu_count() or 1, len(todo))
    from tqdm import tqdm
    bar = tqdm(total=total, initial=done_bytes, unit="B", unit_scale=True, unit_divisor=1024,
               desc="prepare", disable=not progress, file=sys.stderr, smoothing=0.1)
    with bar:
        if workers <= 1:
            _init_worker(context)
            for i, s in map(_run_unit, todo):
                stats[i] = s
                bar.update(units[i].nbytes)
        else:
            # spawn, not fork: the caller may hold JAX/grain threads, which do not survive fork.
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_pool_worker,
                          initargs=(context,)) as pool:
                for i, s in pool.imap_unordered(_run_unit, todo):
                    stats[i] = s
                    bar.update(units[i].nbytes)
    return stats


def _link_or_copy(src: str, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(src, dst)


def _read_all(path: str) -> list[bytes]:
    reader = array_record_module.ArrayRecordReader(path)
    try:
        return reader.read_all()
    finally:
        reader.close()


def _write_all(path, records: Iterable[bytes]) -> None:
    w = array_record_module.ArrayRecordWriter(os.fspath(path), "group_size:1")
    for r in records:
        w.write(r)
    w.close()


# --------------------------------------------------------------------------------------------
# Entry points.

@dir_lock.locked("prepared_dir", "data preparation")
def prepare(corpus_spec: str, tokenizer_path, prepared_dir: str | os.PathLike, *,
            corpus_format: str = "auto", eval_fraction: float = 0.01, num_workers: int = 0,
            tfds_data_dir: str = "", progress: bool = True,
            unit_bytes: int = corpus_lib.UNIT_BYTES) -> dict:
    """Prepares `corpus_spec` into `prepared_dir`, or checks an existing preparation matches.

    Returns the dataset's metadata (tokenizer identity, corpus, stats). Raises ValueError if
    `prepared_dir` already holds data from a different tokenizer, corpus or eval_fraction.
    `tokenizer_path` may also be a tokenizer already loaded.
    """
    check_eval_fraction(eval_fraction)
    tok = (tokenizer_lib.load(tokenizer_path) if isinstance(tokenizer_path, (str, os.PathLike))
           else tokenizer_path)
    if is_prepared(prepared_dir):
        meta = metadata(prepared_dir)
        check_compatible(meta, prepared_dir, tokenizer=tok, corpus_spec=corpus_spec,
                         eval_fraction=eval_fraction)
        logging.info("%s already holds %s prepared with %s", prepared_dir, meta.get("corpus"),
                     tok.path.name)
        return meta
    corpus = corpus_lib.open_corpus(corpus_spec, corpus_format, tfds_data_dir=tfds_data_dir,
                                    unit_bytes=unit_bytes)
    builder = Documents(data_dir=str(prepared_dir), corpus=corpus, tokenizer=tok,
                        eval_fraction=eval_fraction, num_workers=num_workers,
                        corpus_spec=_resolved(corpus_spec), progress=progress)
    # TFDS removes its temporary directory on errors, but not after a kill; those are stale.
    for stale in (pathlib.Path(prepared_dir) / NAME).glob("incomplete.*"):
        shutil.rmtree(stale, ignore_errors=True)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    # This run's work, and that of interrupted runs over other inputs (e.g. before a broken
    # corpus file was fixed): the directory now holds its one complete dataset.
    for work_dir in pathlib.Path(prepared_dir).glob(".work-*"):
        shutil.rmtree(work_dir, ignore_errors=True)
    _remove_empty_dirs(pathlib.Path(prepared_dir) / "downloads")  # TFDS makes it; nothing to fetch
    meta = metadata(prepared_dir)
    logging.info("prepared %s into %s: %s", corpus.description, prepared_dir,
                 json.dumps(meta["stats"]))
    if meta["stats"]["long_sentences_cut"]:
        logging.warning("%d sentence(s) longer than %d tokens (lines never split into sentences?) "
                        "were cut into %d-token pieces", meta["stats"]["long_sentences_cut"],
                        LONG_SENTENCE, SENTENCE_PIECE)
    invalid = meta["stats"]["invalid_utf8_lines"]
    if invalid:
        logging.warning("%d line(s) with invalid UTF-8 kept without their invalid bytes, in %s "
                        "(see stats.invalid_utf8_lines in the prepared dataset's metadata)",
                        sum(invalid.values()), ", ".join(sorted(invalid)[:5]))
    return meta


def check_eval_fraction(eval_fraction: float) -> None:
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"data.eval_fraction={eval_fraction}: expected a fraction in [0, 1)")


def _resolved(corpus_spec: str) -> str:
    """Local corpora are recorded by absolute path: the same relative path from another
    directory is another corpus."""
    if corpus_spec == "default" or corpus_spec.startswith("tfds:"):
        return corpus_spec
    return os.path.abspath(os.path.expanduser(corpus_spec))


def _remove_empty_dirs(root: pathlib.Path) -> None:
    if root.is_dir() and not any(p.is_file() for p in root.rglob("*")):
        shutil.rmtree(root)


def check_compatible(meta: dict, prepared_dir, *, tokenizer: tokenizer_lib.Tokenizer,
                     corpus_spec: str | None = None, eval_fraction: float | None = None) -> None:
    """Raises ValueError naming both sides when prepared data does not match the request."""
    have = meta.get("tokenizer", {})
    if have.get("sha256") != tokenizer.sha256:
        raise ValueError(
            f"{str(prepared_dir)!r} was prepared with tokenizer {have.get('path')!r} "
            f"(sha256 {str(have.get('sha256'))[:12]}, vocab_size {have.get('vocab_size')}), not "
            f"with {tokenizer.path.name!r} (sha256 {tokenizer.sha256[:12]}, vocab_size "
            f"{tokenizer.vocab_size}); tokenizers are never mixed: use another data.prepared_dir "
            "or delete this one")
    if corpus_spec is not None and meta.get("corpus") != _resolved(corpus_spec):
        raise ValueError(f"{str(prepared_dir)!r} was prepared from corpus {meta.get('corpus')!r}, "
                         f"not {_resolved(corpus_spec)!r}; use another data.prepared_dir or "
                         "delete this one")
    if eval_fraction is not None and meta.get("eval_fraction") != eval_fraction:
        raise ValueError(f"{str(prepared_dir)!r} was prepared with eval_fraction="
                         f"{meta.get('eval_fraction')}, not {eval_fraction}; use another "
                         "data.prepared_dir or delete this one")
