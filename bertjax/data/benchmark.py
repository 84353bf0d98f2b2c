"""Measurements behind scripts/benchmark_data.py: preparation and train-time batch throughput.

Each measurement runs in a fresh spawned process so that its peak RSS is its own. Rates are
given per CPU second (what one core sustains; robust to a busy, shared machine) and per wall
second.
"""
from __future__ import annotations

import multiprocessing
import resource
import time

from bertjax.data import prepare, pretraining


def _in_child(fn, *args):
    # A plain Process, not a Pool: pool workers are daemons, and preparation starts its own pool.
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_call_and_send, args=(send, fn, args))
    child.start()
    send.close()
    try:
        ok, value = receive.recv()
    except EOFError:
        raise RuntimeError(f"benchmark child for {fn.__name__} died (exit code "
                           f"{child.join() or child.exitcode})") from None
    child.join()
    if not ok:
        raise RuntimeError(f"benchmark child for {fn.__name__} failed:\n{value}")
    return value


def _call_and_send(send, fn, args):
    try:
        send.send((True, fn(*args)))
    except BaseException:  # report it to the parent rather than dying silently
        import traceback
        send.send((False, traceback.format_exc()))


def _peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # Linux reports KiB


def _cpu_seconds() -> float:
    self, children = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return self.ru_utime + self.ru_stime + children.ru_utime + children.ru_stime


def _prepare(corpus: str, tokenizer: str, workers: int, out: str) -> dict:
    t0, c0 = time.perf_counter(), _cpu_seconds()
    meta = prepare.prepare(corpus, tokenizer, out, num_workers=workers, progress=False)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    s = meta["stats"]
    mb = s["bytes"] / 1e6
    return {
        "corpus": corpus, "workers": workers, "mb": round(mb, 2), "documents": s["documents"],
        "sentences": s["sentences"], "tokens": s["tokens"],
        "empty_documents": s["empty_documents"],
        "wall_s": round(wall, 2), "mb_per_wall_s": round(mb / wall, 2),
        # Worker CPU only (tokenizing units), then everything incl. process start-up and TFDS.
        "mb_per_cpu_s_workers": s["mb_per_s_per_core"],
        "mb_per_cpu_s_all": round(mb / cpu, 2),
        "sentence_split_mb_per_cpu_s": s["sentence_split_mb_per_s"],
        "peak_rss_mb_main": _peak_rss_mb(),
        "peak_rss_mb_largest_worker": _peak_rss_mb(resource.RUSAGE_CHILDREN),
    }


def _iterate(data_config, prepared: str, max_seq_len: int, max_predictions: int,
             batch_size: int, num_batches: int) -> dict:
    it = pretraining.make_iterator(data_config, prepared, global_batch_size=batch_size, seed=0,
                                   max_seq_len=max_seq_len,
                                   max_predictions_per_seq=max_predictions)
    next(it)  # start-up (opening files, first group) is not throughput
    t0, c0 = time.perf_counter(), time.process_time()
    rows = tokens = sequences = 0
    for _ in range(num_batches):
        b = next(it)
        rows += len(b["input_ids"])
        tokens += int(b["input_mask"].sum())
        # Packed rows number their sequences; otherwise one sequence per (non-empty) row.
        sequences += int(b["sequence_ids"].max(axis=1).sum() if "sequence_ids" in b
                         else (b["input_mask"].sum(axis=1) > 0).sum())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"max_seq_len": max_seq_len, "batch_size": batch_size, "batches": num_batches,
            "nsp": bool(data_config.nsp), "whole_word_mask": bool(data_config.whole_word_mask),
            "packing": data_config.get("packing", "none"),
            "seq_per_cpu_s": round(rows / cpu), "seq_per_wall_s": round(rows / wall),
            # fill: real tokens / all positions, the share of the step's compute that is work.
            "fill": round(tokens / rows / max_seq_len, 4),
            "real_tokens_per_cpu_s": round(tokens / cpu),
            "sequences_per_row": round(sequences / rows, 3), "peak_rss_mb": _peak_rss_mb()}


def prepare_throughput(corpus: str, tokenizer: str, workers: int, out: str) -> dict:
    """Prepares `corpus` into `out` (which must not hold a preparation yet) and measures it."""
    return _in_child(_prepare, corpus, tokenizer, workers, out)


def batch_throughput(data_config, prepared: str, *, max_seq_len: int, max_predictions: int,
                     batch_size: int = 256, num_batches: int = 200) -> dict:
    return _in_child(_iterate, data_config, prepared, max_seq_len, max_predictions, batch_size,
                     num_batches)
