"""Fine-tuning speed of a task kind at one shape: train and eval examples/s, and the host time
of decoding and scoring (SQuAD: the n-best search over every window) against the model's time.

`measure(config, task_data)` builds the same FineTuner a run uses (same jit/pmap
steps, same batching) on real inputs, times `steps` train steps on full-length batches after
the compile, then one full dev evaluation split into model time and decode time.
"""
from __future__ import annotations

import time

import jax
import numpy as np

from bertjax import metrics as metrics_lib
from bertjax.finetune import kinds, pretrained, trainer


def measure(config, task_data, *, steps: int = 10) -> dict:
    kind, spec = kinds.find(config.task)
    init = pretrained.resolve_init(config, "", "")
    inputs = kind.prepare(config, spec, task_data, init.tokenizer)
    bs = config.batch_sizes[0]
    tuner = trainer.FineTuner(config, init, inputs, bs, kind=kind)
    state = tuner.create_state(seed=0, lr=config.learning_rates[0])
    length = config.max_seq_length
    rows = np.flatnonzero(inputs.train.lengths <= length)[:bs]
    batch = tuner.put_batch(inputs.train.batch(rows, bs, length))
    t0 = time.perf_counter()
    state, out = tuner.dp.step(state, batch)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, out = tuner.dp.step(state, batch)
    jax.block_until_ready(out)
    step_s = (time.perf_counter() - t0) / steps

    seen: set = set()
    dev = inputs.dev[""] if "" in inputs.dev else next(iter(inputs.dev.values()))
    tuner.predict(state, dev, metrics_lib.StepTimer(seen))  # compiles the eval shapes
    timer = metrics_lib.StepTimer(seen)
    t0 = time.perf_counter()
    outputs = {k: tuner.predict(state, v, timer) for k, v in inputs.dev.items()}
    model_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores, _ = kind.evaluate(inputs.spec, inputs, outputs)  # the prepared spec (CoNLL: tags)
    decode_s = time.perf_counter() - t0
    return {
        "task": spec.name, "seq": length, "batch": bs, "devices": jax.device_count(),
        "model": {k: config.model[k] for k in ("num_layers", "hidden_size", "num_heads",
                                                 "intermediate_size")},
        "vocab_size": init.model_config.vocab_size,
        "compile_s": compile_s, "train_step_s": step_s, "train_examples_per_s": bs / step_s,
        "dev_rows": len(dev), "eval_model_s": model_s,
        "eval_examples_per_s": len(dev) / model_s, "decode_and_score_s": decode_s,
        "decode_share": decode_s / (decode_s + model_s), "dev_scores": scores,
    }

