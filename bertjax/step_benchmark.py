"""The pretraining step timed on synthetic batches: what scripts/benchmark.py and
scripts/gpu_report.py (bertjax/gpu_report.py) both measure.

`bench(config, batch, seq, preds, steps)` builds the real step (bertjax.train.train_step: MLM at
the masked positions + NSP, the configured optimizer, dropout as configured) under the configured
parallel mode, runs it once to compile (timed apart) and once more, and returns `time_once`
(times `steps` steps, keeps each repeat) and `result` (a JSON-able dict from the best repeat).
"""
from __future__ import annotations

import functools
import time

import numpy as np


def synthetic_batch(rng, vocab_size, batch, seq, preds, fill=1.0, packed=0):
    """Random tokens; each row's first round(fill * seq) positions real, split into `packed`
    sequences when packed > 0 (positions restarting, one [CLS]/NSP pair each)."""
    real = max(1, min(seq, round(fill * seq)))
    mask = np.zeros((batch, seq), np.int32)
    mask[:, :real] = 1
    host = dict(
        input_ids=rng.integers(5, vocab_size, (batch, seq), dtype=np.int32) * mask,
        segment_ids=np.zeros((batch, seq), np.int32), input_mask=mask,
        masked_positions=np.sort(rng.choice(real, (batch, preds)), axis=1).astype(np.int32),
        masked_ids=rng.integers(5, vocab_size, (batch, preds), dtype=np.int32),
        masked_weights=np.ones((batch, preds), np.float32),
        nsp_label=rng.integers(0, 2, batch, dtype=np.int32))
    if packed > 0:
        starts = np.linspace(0, real, packed + 1).astype(np.int64)[:-1]
        seq_ids = (np.searchsorted(starts, np.arange(seq), side="right") * mask[0])
        pos = np.arange(seq) - starts[np.maximum(seq_ids - 1, 0)]
        host.update(sequence_ids=np.tile(seq_ids.astype(np.int32), (batch, 1)),
                    position_ids=np.tile((pos * mask[0]).astype(np.int32), (batch, 1)),
                    cls_positions=np.tile(starts.astype(np.int32), (batch, 1)),
                    nsp_label=rng.integers(0, 2, (batch, packed), dtype=np.int32),
                    nsp_weights=np.ones((batch, packed), np.float32))
    return host


def memory_figures(compiled) -> dict:
    """Device memory of one compiled step from XLA's own analysis (arguments + outputs - donated
    aliases + temporaries), and the device's peak so far where the backend reports it (GPU/TPU;
    it is the process's peak, over every step compiled and run before)."""
    import jax
    out = {"step_memory_bytes": None, "device_peak_bytes_so_far": None}
    try:
        m = compiled.memory_analysis()
        out["step_memory_bytes"] = int(m.argument_size_in_bytes + m.output_size_in_bytes
                                       - m.alias_size_in_bytes + m.temp_size_in_bytes)
    except (AttributeError, NotImplementedError, TypeError):  # backend without the analysis
        pass
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_bytes_so_far"] = int(stats["peak_bytes_in_use"])
    return out


def bench(config, batch, seq, preds, steps, fill=1.0, packed=0):
    """Compiles the step; returns (time_once, result): time_once() times `steps` steps."""
    import jax

    from bertjax import metrics, optim, parallel, train
    from bertjax.models import bert

    model_cfg = bert.BertConfig.from_dict(config.model.to_dict())
    model = bert.BertForPreTraining(model_cfg)
    tx, sched = optim.make_optimizer(config.optim, 1000)
    init = functools.partial(train.init_state, model=model, tx=tx, seq_len=seq,
                             max_predictions=preds)
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    dp = parallel.DataParallel(
        config.parallel.mode,
        functools.partial(train.train_step, model=model, tx=tx, schedule=sched,
                          grad_accum=config.train.grad_accum_steps, use_nsp=True),
        abstract, fsdp=config.parallel.fsdp)
    state = dp.put_state(jax.jit(init)(jax.random.PRNGKey(0)))
    host = synthetic_batch(np.random.default_rng(0), model_cfg.vocab_size, batch, seq, preds,
                           fill, packed)
    b = dp.put_batch(host)
    t0 = time.perf_counter()
    step, memory = dp.step, {}
    if dp.mode == "jit":  # compiled ahead of time, so XLA's memory analysis can be read
        step = dp.step.lower(state, b).compile()
        memory = memory_figures(step)
    state, out = step(state, b)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - t0
    state, out = step(state, b)
    jax.block_until_ready(out)
    if dp.mode == "jit":
        memory["device_peak_bytes_so_far"] = memory_figures(step)["device_peak_bytes_so_far"]
    times = []

    def time_once() -> float:
        nonlocal state, out
        t0 = time.perf_counter()
        for _ in range(steps):
            state, out = step(state, b)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / steps)
        return times[-1]

    def result() -> dict:
        step_s = min(times)
        flops = metrics.pretraining_flops_per_sequence(model_cfg, seq, preds) * batch / step_s
        peak = metrics.peak_flops()
        real = metrics.real_token_figures(
            model_cfg, seq_len=seq, rows=batch, seconds=step_s,
            real_tokens=float(host["input_mask"].sum()),
            predictions=float(host["masked_weights"].sum()),
            pairs=float(host["nsp_weights"].sum()) if packed else batch, peak=peak,
            devices=jax.device_count())
        return {
            "impl": "bertjax", "size": model_cfg.size, "mode": dp.mode,
            "dtype": model_cfg.dtype, "attention_impl": model_cfg.attention_impl,
            "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
            "batch": batch, "seq": seq, "predictions": preds,
            "compile_s": round(compile_s, 3), "step_s": step_s, "step_s_all_repeats": times,
            "seq_per_s": batch / step_s, "tokens_per_s": batch * seq / step_s,
            "model_tflops_per_s": flops / 1e12,
            "mfu": flops / (peak * jax.device_count()) if peak else None,
            "packed_sequences_per_row": packed, **real, **memory,
            "final_metrics": train.summarize(dp.metrics_to_host(out)),
        }

    return time_once, result
