"""Peer timing: Hugging Face transformers' fine-tuning train step on synthetic batches, AdamW;
prints JSON with examples_per_s. --head qa: FlaxBertForQuestionAnswering (start/end
cross-entropy); --head token: FlaxBertForTokenClassification (cross-entropy at every position,
--labels tags).

Runs in its own virtual environment (transformers dropped Flax in v5):
  python3 -m venv /tmp/peer && /tmp/peer/bin/pip install -q jax flax optax "transformers==4.47.1"
scripts/benchmark_finetune.py --peer_python /tmp/peer/bin/python runs it at the same shape.
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from transformers import BertConfig, FlaxBertForQuestionAnswering, FlaxBertForTokenClassification

p = argparse.ArgumentParser()
for name, default in [("layers", 4), ("hidden", 256), ("heads", 4), ("seq", 384), ("batch", 8),
                      ("vocab", 30522), ("steps", 10), ("labels", 9)]:
    p.add_argument(f"--{name}", type=int, default=default)
p.add_argument("--head", choices=("qa", "token"), default="qa")
a = p.parse_args()
cfg = BertConfig(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                 num_attention_heads=a.heads, intermediate_size=4 * a.hidden,
                 max_position_embeddings=max(512, a.seq), num_labels=a.labels)
cls = FlaxBertForQuestionAnswering if a.head == "qa" else FlaxBertForTokenClassification
model = cls(cfg, seed=0, input_shape=(1, a.seq))
tx = optax.adamw(3e-5, weight_decay=0.01)
params = model.params
opt_state = tx.init(params)
rng = np.random.default_rng(0)
batch = {"input_ids": jnp.asarray(rng.integers(5, a.vocab, (a.batch, a.seq)), jnp.int32),
         "attention_mask": jnp.ones((a.batch, a.seq), jnp.int32),
         "token_type_ids": jnp.asarray(np.tile(np.arange(a.seq) >= 64, (a.batch, 1)), jnp.int32),
         "start": jnp.asarray(rng.integers(0, a.seq, a.batch), jnp.int32),
         "end": jnp.asarray(rng.integers(0, a.seq, a.batch), jnp.int32),
         "tags": jnp.asarray(rng.integers(0, a.labels, (a.batch, a.seq)), jnp.int32)}


@jax.jit
def step(params, opt_state, batch, dropout_rng):
    def loss_fn(p):
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                    params=p, dropout_rng=dropout_rng, train=True)
        if a.head == "token":
            return optax.softmax_cross_entropy_with_integer_labels(out.logits,
                                                                   batch["tags"]).mean()
        ls = optax.softmax_cross_entropy_with_integer_labels(out.start_logits, batch["start"])
        le = optax.softmax_cross_entropy_with_integer_labels(out.end_logits, batch["end"])
        return ((ls + le) / 2).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


key = jax.random.PRNGKey(0)
params, opt_state, loss = step(params, opt_state, batch, key)  # compile
jax.block_until_ready(loss)
t0 = time.perf_counter()
for i in range(a.steps):
    params, opt_state, loss = step(params, opt_state, batch, jax.random.fold_in(key, i))
jax.block_until_ready(loss)
dt = (time.perf_counter() - t0) / a.steps
print(json.dumps({"peer": f"transformers-4.47.1 {cls.__name__}", "step_s": dt,
                  "examples_per_s": a.batch / dt, "shape": vars(a)}))
