"""Does a pretrained model use its context? The MLM loss at [MASK] positions, with the rest of
the row intact, shuffled, or replaced by random tokens.

A masked-LM can get well under the unigram loss without reading any context: at the 10% of
predicted positions left unchanged it copies the input token, and at [MASK] it predicts the
unigram distribution. Such a model (the "unigram plateau") has nothing to transfer, yet its
overall MLM loss looks like progress. Restricted to [MASK] positions (where the input says
nothing about the answer), the loss only drops if the model reads the other tokens:

- `intact`: the held-out rows as the trainer evaluates them;
- `shuffled`: every unmasked, non-special token of a row permuted within the row (the bag of
  words kept, the order lost; [CLS], [SEP], padding and the predicted positions stay put);
- `replaced`: those tokens replaced by uniformly random non-special tokens (no context left).

`replaced - intact` is what the context is worth in nats; `replaced - shuffled` the part that
needs only the bag of words; `shuffled - intact` the part that needs word order. A model on the
plateau has all three equal. Measured with scripts/context_probe.py (20 held-out batches of 64,
tiny model, 8k vocabulary, enwiki; README, Studies): BERT's initializer_range 0.02 after 834
steps 6.959 / 6.959 / 6.959; 0.05 after 751 steps 6.940 / 6.941 / 6.946; 0.088 after 751 steps
6.895 / 6.938 / 7.006; the cpu_transfer run (0.088) after 60 minutes, step 7,351,
5.079 / 8.291 / 7.937 (a shuffled context misleads it more than a random one).
"""
from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np
from etils import epath

from bertjax import checkpoint, losses, workdir as workdir_lib
from bertjax.models import bert

VARIANTS = ("intact", "shuffled", "replaced")


def corrupt(input_ids: np.ndarray, input_mask: np.ndarray, masked_positions: np.ndarray,
            masked_weights: np.ndarray, special_ids, vocab_size: int, variant: str,
            rng: np.random.Generator) -> np.ndarray:
    """A copy of input_ids [batch, length] with the context of each row changed (see the module
    docstring); predicted positions, special tokens and padding are left as they are."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    out = np.array(input_ids, copy=True)
    if variant == "intact":
        return out
    special = np.zeros(vocab_size, bool)
    special[list(special_ids)] = True
    ordinary = np.flatnonzero(~special)
    for r in range(out.shape[0]):
        movable = (input_mask[r] > 0) & ~special[out[r]]
        movable[masked_positions[r][masked_weights[r] > 0]] = False
        idx = np.flatnonzero(movable)
        if variant == "shuffled":
            out[r, idx] = out[r, rng.permutation(idx)]
        else:
            out[r, idx] = rng.choice(ordinary, size=idx.size)
    return out


def probe(workdir: str, *, batches: int = 20, batch_size: int = 64, step: int | None = None,
          seed: int = 0) -> dict:
    """Loads the pretraining run in `workdir` (its config.json and latest, or `step`,
    checkpoint), reads `batches` held-out batches of its prepared data and returns, per
    variant, the MLM loss and accuracy at [MASK] positions, plus the count of positions."""
    from bertjax.data import pretraining, tokenizer as tok_lib

    root = epath.Path(workdir)
    config_path = root / workdir_lib.CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} not found; expected a pretraining workdir "
                                "(scripts/pretrain.py --workdir)")
    if batches < 1 or batch_size < 1:
        raise ValueError(f"batches={batches}, batch_size={batch_size}: expected both >= 1")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    if step is None:
        with checkpoint.make_manager(checkpoint.checkpoint_dir(root), read_only=True) as mngr:
            step = mngr.latest_step()
    params, model_cfg, _, _ = checkpoint.load_pretrained(str(root), step)
    tok = tok_lib.load(config.data.tokenizer)
    tok_lib.check_matches_model(tok, model_cfg.vocab_size)
    prepared = pretraining.prepare_if_needed(config.data, str(root), tokenizer=tok)
    seq_len = int(config.data.max_seq_len)
    it = pretraining.make_iterator(config.data, prepared, split="eval",
                                   global_batch_size=batch_size, seed=0, tokenizer=tok,
                                   max_seq_len=seq_len)
    model = bert.BertForPreTraining(model_cfg)

    @jax.jit
    def sums(p, input_ids, b):
        logits, _ = model.apply({"params": p}, input_ids, b["segment_ids"], b["input_mask"],
                                b["masked_positions"], packing=b.get("packing"))
        m = losses.mlm_metrics(logits, b["masked_ids"], b["masked_weights"])
        return m["mlm_loss_sum"], m["mlm_correct"], m["mlm_count"]

    rng = np.random.default_rng(seed)
    specials = {tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id}
    totals = {v: np.zeros(3) for v in VARIANTS}
    for _ in range(batches):
        b = {k: np.asarray(v) for k, v in next(it).items()}
        packing = {k: b[k] for k in pretraining.MODEL_PACKING_KEYS if k in b}
        at = np.take_along_axis(b["input_ids"], b["masked_positions"], axis=1)
        weights = b["masked_weights"] * (at == tok.mask_id)   # [MASK] positions only
        feed = {"segment_ids": b["segment_ids"], "input_mask": b["input_mask"],
                "masked_positions": b["masked_positions"], "masked_ids": b["masked_ids"],
                "masked_weights": weights.astype(np.float32)}
        if packing:
            feed["packing"] = packing
        for v in VARIANTS:
            ids = corrupt(b["input_ids"], b["input_mask"], b["masked_positions"],
                          b["masked_weights"], specials, model_cfg.vocab_size, v, rng)
            totals[v] += np.array([float(x) for x in sums(params, ids, feed)])
    count = totals["intact"][2]
    out = {"workdir": str(root), "step": step,
           "mask_positions": int(count), "batches": batches, "batch_size": batch_size}
    for v in VARIANTS:
        loss_sum, correct, n = totals[v]
        out[v] = {"mlm_loss": loss_sum / max(n, 1.0), "mlm_accuracy": correct / max(n, 1.0)}
    out["context_nats"] = out["replaced"]["mlm_loss"] - out["intact"]["mlm_loss"]
    out["order_nats"] = out["shuffled"]["mlm_loss"] - out["intact"]["mlm_loss"]
    return out
