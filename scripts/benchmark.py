"""Train-step throughput on synthetic batches; prints one JSON object.

    python scripts/benchmark.py --config configs/pretrain.py:mini --batch 32 --seq 128 \
        --predictions 20 --steps 20 [--peer_python /tmp/peer/bin/python]

Measures the real pretraining step (bertjax.train.train_step: MLM at masked positions + NSP,
AdamW, dropout on) under the configured parallel mode, with compile time reported apart.
With --peer_python, also runs ../shared/bench/peer_hf_flax_bench.py (Hugging Face's
FlaxBertForPreTraining) with the same shapes in the same run and reports the speed ratio. The
repeats alternate (bertjax, peer, bertjax, peer, ...) so that both see the same machine
conditions; the JSON has the best of each, their ratio, and the median of the per-repeat ratios.
"""
import functools
import json
import os
import statistics
import subprocess
import sys
import time

from absl import flags
from ml_collections import config_flags

from bertjax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", cli.repo_file("configs/pretrain.py") + ":mini", "Config.", lock_config=True)
_BATCH = flags.DEFINE_integer("batch", 32, "Global batch size.")
_SEQ = flags.DEFINE_integer("seq", 128, "Sequence length.")
_PREDS = flags.DEFINE_integer("predictions", 20, "Masked predictions per sequence.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps (after 2 warm-up steps).")
_FILL = flags.DEFINE_float("fill", 1.0, "Share of each row that is real tokens (the rest is "
                           "padding), e.g. the `fill` scripts/benchmark_data.py measures.")
_PACKED = flags.DEFINE_integer("packed", 0, "Sequences per row: >0 builds packed rows "
                               "(sequence_ids, position_ids, one NSP pair per sequence), as "
                               "data.packing='sequences' makes them; 0 = unpacked rows.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats; the best is reported.")
_PEER = flags.DEFINE_string("peer_python", "", "Python of a venv with transformers==4.47.1 "
                            "(see ../shared/bench/README.md) to run the peer benchmark.")
_PEER_SCRIPT = flags.DEFINE_string(
    "peer_script", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench",
                                "peer_hf_flax_bench.py"), "Peer benchmark script.")


def synthetic_batch(rng, vocab_size, batch, seq, preds, fill=1.0, packed=0):
    """Random tokens; each row's first round(fill * seq) positions real, split into `packed`
    sequences when packed > 0 (positions restarting, one [CLS]/NSP pair each)."""
    import numpy as np
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


def bench(config, batch, seq, preds, steps, fill=1.0, packed=0):
    """Compiles the step; returns (time_once, result): time_once() times `steps` steps."""
    import jax
    import numpy as np

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
    state, out = dp.step(state, b)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - t0
    state, out = dp.step(state, b)
    jax.block_until_ready(out)
    times = []

    def time_once() -> float:
        nonlocal state, out
        t0 = time.perf_counter()
        for _ in range(steps):
            state, out = dp.step(state, b)
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
            "packed_sequences_per_row": packed, **real,
            "final_metrics": train.summarize(dp.metrics_to_host(out)),
        }

    return time_once, result


def peer(python, script, cfg, batch, seq, steps):
    cmd = [python, script, "--layers", str(cfg.num_layers), "--hidden", str(cfg.hidden_size),
           "--heads", str(cfg.num_heads), "--seq", str(seq), "--batch", str(batch),
           "--vocab", str(cfg.vocab_size), "--steps", str(steps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    config = _CONFIG.value
    peer_script = cli.user_path(_PEER_SCRIPT.value)
    with cli.stdout_to_stderr():
        time_once, result = bench(config, _BATCH.value, _SEQ.value, _PREDS.value, _STEPS.value,
                                  _FILL.value, _PACKED.value)
        from bertjax.models import bert
        cfg = bert.BertConfig.from_dict(config.model.to_dict())
        peer_runs = []
        for _ in range(_REPEATS.value):
            time_once()
            if _PEER.value:
                peer_runs.append(peer(_PEER.value, peer_script, cfg, _BATCH.value,
                                      _SEQ.value, _STEPS.value))
        out = {"bertjax": result()}
    if peer_runs:
        best = max(peer_runs, key=lambda r: r["seq_per_s"])
        ours = [_BATCH.value / t for t in out["bertjax"]["step_s_all_repeats"]]
        paired = [a / r["seq_per_s"] for a, r in zip(ours, peer_runs)]
        out["peer"] = dict(best, seq_per_s_all_repeats=[r["seq_per_s"] for r in peer_runs])
        out["speedup_vs_peer"] = out["bertjax"]["seq_per_s"] / best["seq_per_s"]
        out["speedup_vs_peer_per_repeat"] = paired
        out["speedup_vs_peer_median"] = statistics.median(paired)
    print(json.dumps(out, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    cli.run(main)
