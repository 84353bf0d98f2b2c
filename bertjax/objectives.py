"""Pretraining objectives by name (`config.objective`): how a batch gets its targets, which
loss the head's logits feed, and what evaluation reports. train.py picks one by name.

  mlm  BERT's masked LM (with NSP when data.nsp): dynamic masking (data/masking.py), the loss
       at the masked positions; eval adds the context probe (context_nats).
  ltr  left-to-right LM, the paper's "LTR & No NSP" (Devlin et al. 2019, Table 5): the same
       encoder with causal attention (model.causal=True), every position predicting the next
       token with the MLM head's transform and the tied output embeddings, no masking, no NSP
       (data/ltr.py); eval reports next-token loss and perplexity (ltr_loss, ltr_perplexity).
       The context probe measures the loss at [MASK] positions, which LTR has none of: skipped.

Both objectives feed the head through the same batch keys (masked_positions, masked_ids,
masked_weights), so the model, the step functions and the parallel wrappers are shared.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

from bertjax import losses
from bertjax.data import ltr as ltr_lib
from bertjax.data.masking import MaskingOptions, MaskTransform, Vocab


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    head: str                 # metric prefix of the prediction head: <head>_loss, <head>_count
    causal: bool              # the model.causal it requires
    nsp: bool                 # may be combined with NSP (data.nsp)
    context_probe: bool       # eval runs bertjax/context_probe.py's shuffled-context feed
    perplexity: bool          # reports <head>_perplexity = exp(<head>_loss)
    metrics: Callable         # (logits, batch) -> losses' sums dict for `head`
    batch_maker: Callable     # (tokenizer, MaskingOptions) -> the Grain transform adding targets
    predictions: Callable     # (seq_len, data.max_predictions_per_seq) -> prediction slots per row

    def check(self, model_cfg, data_config) -> None:
        """The combinations that make no sense, as one line naming the keys to set."""
        preset = " (or use the preset: configs/pretrain.py:SIZE,ltr)" if self.causal else ""
        if model_cfg.causal != self.causal:
            raise ValueError(
                f"objective={self.name!r} needs model.causal={self.causal}, got "
                f"model.causal={model_cfg.causal}{preset}" + (
                    "; a bidirectional encoder would see the token it predicts"
                    if self.causal else "; causal attention is the 'ltr' objective's"))
        if data_config.nsp and not self.nsp:
            raise ValueError(f"objective={self.name!r} has no next-sentence prediction: set "
                             f"data.nsp=False{preset}")

    def summarize(self, sums: dict) -> dict:
        """Summed counters (over steps/devices) -> mean losses and accuracies (and, for LTR,
        the perplexity exp(loss) of the held-out next tokens)."""
        out = {}
        for head in (self.head, "nsp"):
            if f"{head}_count" in sums:
                count = max(float(sums[f"{head}_count"]), 1e-8)
                out[f"{head}_loss"] = float(sums[f"{head}_loss_sum"]) / count
                out[f"{head}_accuracy"] = float(sums[f"{head}_correct"]) / count
        if self.perplexity:
            out[f"{self.head}_perplexity"] = math.exp(min(out[f"{self.head}_loss"], 700.0))
        out["loss"] = out[f"{self.head}_loss"] + out.get("nsp_loss", 0.0)
        return out

    def eval_feeds(self, batch: dict, tok, vocab_size: int, rng) -> dict:
        """name -> batch, each evaluated: 'all' is the held-out batch as is; MLM adds the
        context probe's [MASK]-only feeds, intact and shuffled (bertjax/context_probe.py)."""
        if not self.context_probe:
            return {"all": batch}
        from bertjax import context_probe
        return context_probe.eval_feeds(batch, tok, vocab_size, rng)

    def eval_summary(self, total: dict) -> dict:
        """eval_feeds' summed counters -> what eval reports (metrics.jsonl, the log)."""
        out = self.summarize(total["all"])
        if self.context_probe:
            from bertjax import context_probe
            out.update(context_probe.eval_summary(total["intact"], total["shuffled"]))
        return out

    def progress(self, last_train: dict, last_eval: dict) -> dict:
        """The progress bar: train loss and accuracy, and the last eval's context_nats (MLM)
        or held-out next-token perplexity (LTR)."""
        h, nan = self.head, float("nan")
        out = {"loss": f"{last_train['loss']:.3f}",
               f"{h}_acc": f"{last_train[f'{h}_accuracy']:.3f}"}
        if self.context_probe:
            out["ctx"] = f"{last_eval.get('context_nats', nan):.2f}"
        else:
            out["eval_ppl"] = f"{last_eval.get(f'{h}_perplexity', nan):.1f}"
        return out


def _mlm_targets(tok, masking: MaskingOptions):
    return MaskTransform(Vocab.from_tokenizer(tok), masking)


MLM = Objective(
    name="mlm", head="mlm", causal=False, nsp=True, context_probe=True, perplexity=False,
    metrics=lambda logits, b: losses.mlm_metrics(logits, b["masked_ids"], b["masked_weights"]),
    batch_maker=_mlm_targets, predictions=lambda seq_len, max_predictions: max_predictions)
LTR = Objective(
    name="ltr", head="ltr", causal=True, nsp=False, context_probe=False, perplexity=True,
    metrics=lambda logits, b: losses.ltr_metrics(logits, b["masked_ids"], b["masked_weights"]),
    batch_maker=lambda tok, masking: ltr_lib.NextTokenTransform(),
    predictions=lambda seq_len, max_predictions: seq_len)
OBJECTIVES = {o.name: o for o in (MLM, LTR)}


def get(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"objective={name!r}: expected one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def of(config) -> Objective:
    """A run config's objective (configs from before the field existed: 'mlm')."""
    return get(config.get("objective", "mlm"))
