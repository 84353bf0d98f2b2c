"""Train-step throughput on synthetic batches; prints one JSON object.

    python scripts/benchmark.py --config configs/pretrain.py:mini --batch 32 --seq 128 \
        --predictions 20 --steps 20 [--peer_python /tmp/peer/bin/python]

Measures the real pretraining step (bertjax.train.train_step: MLM at masked positions + NSP,
AdamW, dropout on) under the configured parallel mode, with compile time reported apart.
With --peer_python, also runs ../shared/bench/peer_hf_flax_bench.py (Hugging Face's
FlaxBertForPreTraining) with the same shapes in the same run and reports the speed ratio. The
repeats alternate (bertjax, peer, bertjax, peer, ...) so that both see the same machine
conditions; the JSON has the best of each, their ratio, and the median of the per-repeat ratios.
The timing itself lives in bertjax/step_benchmark.py (shared with scripts/gpu_report.py).
"""
import json
import os
import statistics
import subprocess
import sys

from absl import flags
from ml_collections import config_flags

from bertjax import cli, step_benchmark

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
        time_once, result = step_benchmark.bench(config, _BATCH.value, _SEQ.value, _PREDS.value,
                                                 _STEPS.value, _FILL.value, _PACKED.value)
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
