"""Everything a lent GPU should tell us, in one run: `python scripts/gpu_report.py`.

Parts (each a function returning a JSON-able dict; a part that fails records its error and the
report goes on):
  throughput  BERT-base pretraining step, bf16 compute / float32 params, jit, at seq 128 and 512,
              the largest batch of a short list that fits: seq/s, tokens/s, MFU against the
              device's bf16 peak (bertjax.metrics.PEAK_BF16_FLOPS; unknown device -> null),
              step memory; attention_impl 'xla' and 'cudnn', and packed rows at seq 512 ('xla':
              cuDNN takes no packed rows).
  numerics    cuDNN vs xla attention outputs and gradients (q, k, v), max |difference|, in
              bfloat16 and float32; einsum vs xla as well, which runs on any backend.
  pretrain    a bf16 pretraining of `mini` on the built-in corpus (bertjax/gpu_runs.py): loss
              falls, every step finite, a checkpoint saved halfway and the run resumed from it.
  glue        fine-tuning examples/s at base size (bertjax/gpu_runs.py).
`smoke=True` runs every part at micro sizes (tiny model, a few steps), on CPU in seconds; the
cuDNN parts then say "skipped: no GPU".
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import time

import numpy as np

from bertjax import gpu_runs
from bertjax.gpu_runs import load_config, on_gpu

log = logging.getLogger("bertjax")
NO_GPU = "skipped: no GPU"
OUT_OF_MEMORY = ("RESOURCE_EXHAUSTED", "out of memory", "Out of memory")


@dataclasses.dataclass(frozen=True)
class Sizes:
    model: str                                  # model size of the throughput part
    batches: dict                               # seq -> batches per device to try, largest first
    predictions: dict                           # seq -> masked predictions per sequence
    steps: int                                  # timed steps per repeat
    repeats: int
    packed: int                                 # sequences per packed row (longest seq only)
    attention_shape: tuple                      # numerics: batch, length, heads, head dim
    pretrain: dict                              # bertjax.gpu_runs.pretrain's arguments
    glue: dict                                  # bertjax.gpu_runs.glue's arguments


FULL = Sizes(
    model="base", batches={128: (512, 256, 128, 64, 32), 512: (128, 64, 32, 16, 8)},
    predictions={128: 20, 512: 80}, steps=20, repeats=2, packed=4,
    attention_shape=(8, 512, 12, 64),
    pretrain=dict(variant="mini,gpu", steps=300, batch=64, log_every=10),
    glue=dict(variant="SST-2,gpu", size="base", steps=60, batch=32, seq=128))
SMOKE = Sizes(
    model="tiny", batches={16: (8, 4), 32: (4, 2)}, predictions={16: 2, 32: 4}, steps=2,
    repeats=1, packed=2, attention_shape=(2, 16, 2, 8),
    pretrain=dict(variant="tiny", steps=6, batch=4, log_every=1),
    glue=dict(variant="SST-2,tiny", size="tiny", steps=4, batch=4, seq=32))


def device_info() -> dict:
    import jax

    from bertjax import metrics
    d = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": d.device_kind,
            "devices": jax.device_count(), "jax": jax.__version__,
            "peak_bf16_flops": metrics.peak_flops(d)}


def _is_oom(e: BaseException) -> bool:
    return any(s in str(e) for s in OUT_OF_MEMORY)


def _error(e: BaseException) -> str:
    return f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]


# --- throughput ------------------------------------------------------------------------------
def throughput_config(size: str, attention_impl: str):
    config = load_config("pretrain", size)
    config.model.dtype = "bfloat16"
    config.model.attention_impl = attention_impl
    config.model.attention_dropout_rate = 0.0   # the fused kernel has none; the same for both
    config.parallel.mode = "jit"
    return config


def largest_batch(sizes: Sizes, seq: int, attention_impl: str, packed: int = 0) -> dict:
    """The first batch of sizes.batches[seq] whose step compiles and runs, timed."""
    from bertjax import step_benchmark
    import jax
    row = {"seq": seq, "attention_impl": attention_impl, "packed_sequences_per_row": packed}
    if attention_impl == "cudnn" and not on_gpu():
        return dict(row, status=NO_GPU)
    config = throughput_config(sizes.model, attention_impl)
    too_big = []
    for batch in sizes.batches[seq]:
        batch *= jax.device_count()
        try:
            time_once, result = step_benchmark.bench(config, batch, seq, sizes.predictions[seq],
                                                     sizes.steps, packed=packed)
            for _ in range(sizes.repeats):
                time_once()
            out = result()
        except Exception as e:  # noqa: BLE001 - recorded in the report, never hidden
            if not _is_oom(e):
                return dict(row, status=_error(e), batches_out_of_memory=too_big)
            too_big.append(batch)
            continue
        finally:
            gc.collect()  # the failed try's buffers, before the next one allocates
        out.pop("final_metrics", None)
        return dict(row, status="ok", batches_out_of_memory=too_big, **out)
    return dict(row, status=f"out of memory at every batch of {list(sizes.batches[seq])}",
                batches_out_of_memory=too_big)


def throughput(sizes: Sizes, deadline: float) -> list[dict]:
    longest = max(sizes.batches)
    cases = [(seq, impl, 0) for seq in sorted(sizes.batches) for impl in ("xla", "cudnn")]
    cases.append((longest, "xla", sizes.packed))
    rows = []
    for seq, impl, packed in cases:
        if time.monotonic() > deadline:
            rows.append({"seq": seq, "attention_impl": impl, "packed_sequences_per_row": packed,
                         "status": "skipped: the report's time budget was spent"})
            continue
        log.info("throughput: seq %d, attention %s, packed %d", seq, impl, packed)
        rows.append(largest_batch(sizes, seq, impl, packed))
    return rows


# --- numerics --------------------------------------------------------------------------------
def _attention_inputs(shape, dtype):
    import jax.numpy as jnp
    b, s, h, d = shape
    rng = np.random.default_rng(0)
    q, k, v, cot = (jnp.asarray(rng.standard_normal((b, s, h, d)), dtype) for _ in range(4))
    lengths = np.linspace(s, max(1, s // 4), b).round().astype(np.int32)  # right padding
    key_mask = jnp.asarray(np.arange(s)[None, :] < lengths[:, None])
    return q, k, v, cot, key_mask


def _attention_and_grads(impl, q, k, v, cot, key_mask):
    import jax
    import jax.numpy as jnp

    from bertjax.models import attention
    real = key_mask[:, :, None, None]  # padded query rows are never used: left out

    def loss(q, k, v):
        out = attention.dot_product_attention(q, k, v, key_mask, implementation=impl)
        return jnp.sum(jnp.where(real, out * cot, 0).astype(jnp.float32)), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return jnp.where(real, out, 0), grads


def attention_numerics(shape) -> dict:
    """max |impl - xla| of the attention output and of its q/k/v gradients, per dtype."""
    import jax.numpy as jnp
    out = {"reference": "xla", "shape_bshd": list(shape)}
    for dtype in ("bfloat16", "float32"):
        inputs = _attention_inputs(shape, jnp.dtype(dtype))
        ref = _attention_and_grads("xla", *inputs)
        per = {}
        for impl in ("einsum", "cudnn"):
            if impl == "cudnn" and not on_gpu():
                per[impl] = NO_GPU
                continue
            try:
                got = _attention_and_grads(impl, *inputs)
            except Exception as e:  # noqa: BLE001 - e.g. a dtype the kernel does not take
                per[impl] = _error(e)
                continue
            diff = lambda a, b: float(jnp.max(jnp.abs(a.astype(jnp.float32)  # noqa: E731
                                                      - b.astype(jnp.float32))))
            per[impl] = {"output": diff(got[0], ref[0]),
                         **{f"grad_{n}": diff(g, r) for n, g, r in zip("qkv", got[1], ref[1])},
                         "output_max_abs": float(jnp.max(jnp.abs(ref[0].astype(jnp.float32))))}
        out[dtype] = per
    return out


# --- the report ------------------------------------------------------------------------------
def _part(name: str, fn, report: dict, deadline: float = float("inf")) -> None:
    t0 = time.monotonic()
    if t0 > deadline:
        report[name] = {"status": "skipped: the report's time budget was spent"}
        return
    log.info("gpu report: %s", name)
    try:
        report[name] = fn()
    except Exception as e:  # noqa: BLE001 - one failed part must not lose the others
        log.exception("gpu report: %s failed", name)
        report[name] = {"status": _error(e)}
    report["seconds"][name] = round(time.monotonic() - t0, 1)


def run(*, smoke: bool = False, budget_s: float = 450.0, workdir: str) -> dict:
    """The whole report as one dict. `workdir` receives the pretraining run and the GLUE
    files; throughput gets 60% of `budget_s` (cases past it are marked skipped), and a part
    that would start after `budget_s` is marked skipped too."""
    sizes = SMOKE if smoke else FULL
    start = time.monotonic()
    report = {"smoke": smoke, "device": device_info(), "seconds": {}}
    _part("numerics", lambda: attention_numerics(sizes.attention_shape), report)
    _part("throughput", lambda: throughput(sizes, start + 0.6 * budget_s), report)
    _part("pretrain", lambda: gpu_runs.pretrain(workdir=f"{workdir}/pretrain", **sizes.pretrain),
          report, start + budget_s)
    _part("glue", lambda: gpu_runs.glue(workdir=f"{workdir}/glue", **sizes.glue), report,
          start + budget_s)
    report["seconds"]["total"] = round(time.monotonic() - start, 1)
    return report


def _fmt(x, spec=".3g") -> str:
    return "-" if x is None else format(x, spec)


def markdown(report: dict) -> str:
    """The report's figures as markdown tables (the JSON has everything)."""
    dev = report["device"]
    lines = [f"# GPU report: {dev['device_kind']} x{dev['devices']} ({dev['backend']}, jax "
             f"{dev['jax']}; bf16 peak {_fmt(dev['peak_bf16_flops'])} FLOP/s)"
             + (" — smoke run, micro sizes" if report["smoke"] else ""), "",
             "| seq | attention | packed | batch | seq/s | tokens/s | MFU | step memory GiB "
             "| compile s | status |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows = report.get("throughput")
    for r in rows if isinstance(rows, list) else []:
        mem = r.get("step_memory_bytes")
        lines.append(
            f"| {r['seq']} | {r['attention_impl']} | {r['packed_sequences_per_row'] or 'no'} | "
            f"{r.get('batch', '-')} | {_fmt(r.get('seq_per_s'), '.1f')} | "
            f"{_fmt(r.get('tokens_per_s'), '.0f')} | {_fmt(r.get('mfu'), '.1%')} | "
            f"{_fmt(None if mem is None else mem / 2**30, '.2f')} | "
            f"{_fmt(r.get('compile_s'), '.1f')} | {r['status']} |")
    num = report.get("numerics", {})
    lines += ["", "| attention vs xla | dtype | output | grad q | grad k | grad v |",
              "|---|---|---|---|---|---|"]
    for dtype in ("bfloat16", "float32"):
        for impl, d in num.get(dtype, {}).items():
            if isinstance(d, dict):
                lines.append(f"| {impl} | {dtype} | {_fmt(d['output'])} | {_fmt(d['grad_q'])} | "
                             f"{_fmt(d['grad_k'])} | {_fmt(d['grad_v'])} |")
            else:
                lines.append(f"| {impl} | {dtype} | {d} | | | |")
    p, g = report.get("pretrain", {}), report.get("glue", {})
    lines += ["", f"Pretraining: {p.get('status')}; loss {_fmt(p.get('first_loss'))} -> "
              f"{_fmt(p.get('last_loss'))} over {p.get('steps')} steps, "
              f"{_fmt(p.get('train_seq_per_s'), '.1f')} seq/s",
              f"GLUE fine-tuning: {g.get('status')}; {_fmt(g.get('train_examples_per_s'), '.1f')} "
              f"train / {_fmt(g.get('eval_examples_per_s'), '.1f')} eval examples/s",
              f"Seconds per part: {report['seconds']}", ""]
    return "\n".join(lines)
