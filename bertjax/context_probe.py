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
import math

import jax
import ml_collections
import numpy as np
from etils import epath

from bertjax import checkpoint, losses, workdir as workdir_lib
from bertjax.models import bert

VARIANTS = ("intact", "shuffled", "replaced")

# The escape from the unigram plateau (issue 23): the first eval whose loss at [MASK] with the
# context intact is at least this many nats below the loss with the context shuffled. 0.5 nats
# is far above the eval noise of 20 batches of 64 (a plateaued model stays within ~0.01) and
# well below what a model that reads its context reaches (3.2 after the hour-long cpu_transfer run).
ESCAPE_NATS = 0.5


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


def mask_only(batch: dict, mask_id: int) -> dict:
    """The batch with its prediction weights kept only where the input is [MASK] (where the
    input says nothing about the answer, so a lower loss can only come from the context)."""
    at = np.take_along_axis(np.asarray(batch["input_ids"]), np.asarray(batch["masked_positions"]),
                            axis=1)
    weights = np.asarray(batch["masked_weights"]) * (at == mask_id)
    return dict(batch, masked_weights=weights.astype(np.asarray(batch["masked_weights"]).dtype))


def context_variant(batch: dict, variant: str, tok, vocab_size: int,
                    rng: np.random.Generator) -> dict:
    """mask_only(batch) with its context `variant`-ed (see corrupt); other keys unchanged."""
    specials = {tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id}
    out = mask_only(batch, tok.mask_id)
    out["input_ids"] = corrupt(out["input_ids"], out["input_mask"], out["masked_positions"],
                               batch["masked_weights"], specials, vocab_size, variant, rng)
    return out


def eval_summary(intact_sums: dict, shuffled_sums: dict) -> dict:
    """Summed MLM counters at [MASK] positions (intact, shuffled context) -> the eval row's
    mask_mlm_loss, shuffled_mask_mlm_loss and context_nats (their difference)."""
    def mean(s):
        return float(s["mlm_loss_sum"]) / max(float(s["mlm_count"]), 1e-8)
    intact, shuffled = mean(intact_sums), mean(shuffled_sums)
    return {"mask_mlm_loss": intact, "shuffled_mask_mlm_loss": shuffled,
            "context_nats": shuffled - intact}


def escaped(eval_row: dict, threshold: float | None = None) -> bool:
    """Whether one eval row (its context_nats) is off the unigram plateau (>= ESCAPE_NATS)."""
    nats = eval_row.get("context_nats")
    return nats is not None and nats >= (ESCAPE_NATS if threshold is None else threshold)


def escape_step(eval_rows, threshold: float | None = None) -> int | None:
    """The first eval step whose context_nats >= threshold (rows: dicts with 'step' and
    'context_nats', e.g. metrics.jsonl eval rows, in any order); None if none reached it."""
    hits = [int(r["step"]) for r in eval_rows if escaped(r, threshold)]
    return min(hits) if hits else None


def probe(workdir: str, *, batches: int = 20, batch_size: int = 64, step: int | None = None,
          seed: int = 0, mask_rate: float | None = None) -> dict:
    """Loads the pretraining run in `workdir` (its config.json and latest, or `step`,
    checkpoint), reads `batches` held-out batches of its prepared data and returns, per
    variant, the MLM loss and accuracy at [MASK] positions, plus the count of positions, and
    under "all" the loss and accuracy over every prediction (the pretraining eval's held-out
    MLM figures). `mask_rate` masks the held-out rows at another rate than the run's (with
    ceil(rate x seq) predictions per row), so that runs trained at different rates are scored
    on the same task."""
    from bertjax.data import pretraining, tokenizer as tok_lib

    root = epath.Path(workdir)
    config_path = root / workdir_lib.CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} not found; expected a pretraining workdir "
                                "(scripts/pretrain.py --workdir)")
    if batches < 1 or batch_size < 1:
        raise ValueError(f"batches={batches}, batch_size={batch_size}: expected both >= 1")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    if mask_rate is not None:
        if not 0.0 < mask_rate <= 1.0:
            raise ValueError(f"mask_rate={mask_rate}: expected a rate in (0, 1]")
        config.data.mask_rate = float(mask_rate)
        config.data.max_predictions_per_seq = math.ceil(mask_rate * config.data.max_seq_len)
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
    totals = {v: np.zeros(3) for v in ("all",) + VARIANTS}
    for _ in range(batches):
        b = {k: np.asarray(v) for k, v in next(it).items()}
        packing = {k: b[k] for k in pretraining.MODEL_PACKING_KEYS if k in b}
        for v in totals:
            fed = b if v == "all" else context_variant(b, v, tok, model_cfg.vocab_size, rng)
            feed = {k: fed[k] for k in ("segment_ids", "input_mask", "masked_positions",
                                        "masked_ids", "masked_weights")}
            if packing:
                feed["packing"] = packing
            totals[v] += np.array([float(x) for x in sums(params, fed["input_ids"], feed)])
    count = totals["intact"][2]
    out = {"workdir": str(root), "step": step, "mask_rate": float(config.data.mask_rate),
           "mask_positions": int(count), "batches": batches, "batch_size": batch_size}
    for v in totals:
        loss_sum, correct, n = totals[v]
        out[v] = {"mlm_loss": loss_sum / max(n, 1.0), "mlm_accuracy": correct / max(n, 1.0)}
    # context_nats as in the pretraining eval rows (shuffled - intact); replaced_nats what the
    # whole context is worth (the README's first probes called that context_nats).
    out["context_nats"] = out["shuffled"]["mlm_loss"] - out["intact"]["mlm_loss"]
    out["replaced_nats"] = out["replaced"]["mlm_loss"] - out["intact"]["mlm_loss"]
    return out


def eval_feeds(batch: dict, tok, vocab_size: int, rng: np.random.Generator) -> dict:
    """The pretraining eval's three forwards on one host batch: 'all' (every prediction, the
    eval's mlm/nsp figures), 'intact' and 'shuffled' ([MASK] positions only, for
    eval_summary)."""
    return {"all": batch, "intact": mask_only(batch, tok.mask_id),
            "shuffled": context_variant(batch, "shuffled", tok, vocab_size, rng)}


def run_escape_step(workdir: str, threshold: float | None = None) -> int | None:
    """escape_step over the eval rows of <workdir>/metrics.jsonl (None if it has none)."""
    path = epath.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return escape_step([r for r in rows if r.get("split") == "eval"], threshold)
