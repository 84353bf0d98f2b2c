"""One metric writer (JSON lines + TensorBoard), steady-state step timing, model FLOPs and MFU.

Only process 0 writes. JSON lines go to <workdir>/metrics.jsonl (one object per log event:
{"step": .., "split": "train"|"eval", ...}); TensorBoard event files to <workdir>/tensorboard.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Callable, Hashable

import jax

# Dense bf16 peak FLOP/s per device (vendor datasheets; no sparsity).
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,   # SXM; PCIe is lower (756e12), matched below by "H100 PCIe"
    "H100 PCIe": 756e12,
    "A100": 312e12,
    "L4": 121e12,
    "A10G": 70e12,
    "V100": 125e12,   # fp16 tensor cores
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}


def peak_flops(device=None) -> float | None:
    """Peak bf16 FLOP/s of a device from its device_kind, or None when unknown (CPU)."""
    device = device or jax.devices()[0]
    kind = getattr(device, "device_kind", "")
    best = None
    for name, flops in PEAK_BF16_FLOPS.items():
        if name.lower() in kind.lower() and (best is None or len(name) > len(best[0])):
            best = (name, flops)
    return best[1] if best else None


def pretraining_flops_per_sequence(model_cfg, seq_len: int, max_predictions: float, *,
                                   tokens: float | None = None, pairs: float = 1.0) -> float:
    """Training FLOPs (forward + backward = 3x forward) for one row of seq_len tokens.

    Per token: 6 x (matmul parameters of the encoder layers) plus the attention term
    12 x layers x seq_len x hidden (QK^T and AV). The MLM head is counted only at the
    predicted positions: 6 x (H^2 transform + H x V output projection) per prediction.
    Pooler + NSP: 6 x (H^2 + 2H) per pair. Embedding lookups are not FLOPs.

    By default every position, prediction slot and one pair count (what the step computes).
    For the work done on real tokens pass the row's averages: `tokens` real tokens,
    `max_predictions` real predictions, `pairs` NSP pairs (0 for MLM-only); the attention
    term keeps seq_len keys per token (the packed sequences' own lengths are not tracked).
    """
    h, ff, layers = model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.num_layers
    layer_params = 4 * h * h + 2 * h * ff
    per_token = 6 * layers * layer_params + 12 * layers * seq_len * h
    mlm = 6 * max_predictions * (h * h + h * model_cfg.vocab_size)
    nsp = 6 * (h * h + 2 * h)
    return (seq_len if tokens is None else tokens) * per_token + mlm + pairs * nsp


def real_token_figures(model_cfg, *, seq_len: int, rows: float, seconds: float,
                       real_tokens: float, predictions: float, pairs: float,
                       peak: float | None, devices: int) -> dict:
    """Throughput and MFU counting only real tokens, predictions and pairs, over `rows` rows
    processed in `seconds`: real_tokens_per_s, fill (real / padded tokens) and mfu_real
    (None without a known peak, e.g. on CPU)."""
    flops = pretraining_flops_per_sequence(
        model_cfg, seq_len, predictions / rows, tokens=real_tokens / rows,
        pairs=pairs / rows) * rows / seconds
    return {"real_tokens_per_s": real_tokens / seconds, "fill": real_tokens / (rows * seq_len),
            "mfu_real": flops / (peak * devices) if peak else None}


class MetricWriter:
    """JSONL + TensorBoard writer; a no-op on processes other than 0."""

    def __init__(self, workdir: str, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = None
        self._tb = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if v is not None else None) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": int(step), "split": split, "time": time.time(),
                                      **clean}) + "\n")
        self._jsonl.flush()
        for k, v in clean.items():
            if v is not None:
                self._tb.add_scalar(f"{split}/{k}", v, int(step))
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


class StepTimer:
    """Steady-state throughput of jitted steps: items per second, compiles and pauses left out.

    `timer.step(key, fn, items)` runs `fn()` (a step). The first step of each new `key` (an input
    shape: it compiles) is timed alone, blocking before and after, into `compile_s`, and not
    counted; time inside `with timer.paused():` (evaluation, checkpoints) is not counted either.
    Dispatch is asynchronous, so the clock is only read after blocking on the last step's
    output. Pass a shared `seen` set when several timers use the same compiled functions.

    Pretraining's loop uses it as: state, out = timer.step(shape, lambda: dp.step(state, batch),
    batch_size) per step; `timer.lap()` at each log event for seq/s over the window;
    `with timer.paused():` around eval and checkpoint saves; compile_s once.
    """

    def __init__(self, seen: set | None = None):
        self.seen = set() if seen is None else seen
        self.compile_s = 0.0
        self.items = 0.0
        self.seconds = 0.0
        self._mark = None          # start of the open steady interval, None when closed
        self._last: Any = None     # the last step's output, to block on
        self._lap = (0.0, 0.0)     # (items, seconds) at the previous lap()

    def step(self, key: Hashable, fn: Callable[[], Any], items: float = 1.0) -> Any:
        if key not in self.seen:
            self.stop()
            t0 = time.perf_counter()
            self._last = jax.block_until_ready(fn())
            self.compile_s += time.perf_counter() - t0
            self.seen.add(key)
            return self._last
        if self._mark is None:
            jax.block_until_ready(self._last)
            self._mark = time.perf_counter()
        self._last = fn()
        self.items += items
        return self._last

    def stop(self) -> None:
        """Block on the last step and stop the clock; the next steady step restarts it."""
        jax.block_until_ready(self._last)
        if self._mark is not None:
            self.seconds += time.perf_counter() - self._mark
            self._mark = None

    @contextlib.contextmanager
    def paused(self):
        self.stop()
        yield

    def rate(self) -> float | None:
        """Items per second over every steady step so far (None before there is one)."""
        self.stop()
        return self.items / self.seconds if self.items and self.seconds > 0 else None

    def lap(self) -> float | None:
        """Items per second over the steady steps since the previous lap()."""
        self.stop()
        items, seconds = self.items - self._lap[0], self.seconds - self._lap[1]
        self._lap = (self.items, self.seconds)
        return items / seconds if items and seconds > 0 else None
