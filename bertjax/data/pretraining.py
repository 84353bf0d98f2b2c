"""Pretraining input pipeline on Grain: documents -> NSP pairs -> batches -> dynamic masking.

  indices of this host's documents --shuffle per epoch--> groups of `docs_per_group` documents
  --create_instances (NSP pairing, random per epoch)--> [n, max_seq_len] arrays per group
  --rebatch--> fixed-size batches --mask_batch (data/masking.py; fresh masks every epoch)-->
  numpy batch dicts

Pairing follows BERT's create_pretraining_data.py (per document: a target length, chunks of
whole sentences, A = the first k sentences, B = the true continuation or a span of another
document with the unused sentences put back, the longer side truncated at a random end), with
the NotNext partner drawn from the same group of shuffled documents rather than from the whole
corpus held in memory. The group's instances are shuffled together, so a batch mixes documents.

Packing (`data.packing`, off by default) fills the padding of those rows, inside the same
per-group transform and before masking:
  'sequences'       several complete sequences per row, kept apart: NSP pairs (each with its own
                    [CLS], segment ids and label) or, MLM-only, pieces of one document each
                    (RoBERTa's DOC-SENTENCES, with pieces cut at the row length rather than at
                    sentence ends). The rows carry position_ids (restarting at 0 per sequence)
                    and sequence_ids (1, 2, ...; 0 = padding) for a block-diagonal attention,
                    and with NSP cls_positions / nsp_label / nsp_weights [n, max_sequences].
  'full_sentences'  MLM-only, RoBERTa's FULL-SENTENCES: the group's documents as one stream,
                    [SEP] between documents, cut into full rows; one sequence per row (text may
                    cross a document boundary by design), so the rows look unpacked.
Best-fit decreasing over the group's sequences (data/packing.py), at most
`max_sequences_per_row` per row, keeps the shapes static.

Every random choice comes from Grain's per-element RNG (seed x element index), so the same
config, seed and step give the same batch, and a restored iterator state continues exactly.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
from typing import Sequence

import grain
import numpy as np

from bertjax import objectives
from bertjax.data import packing, prepare as prepare_lib
from bertjax.data.masking import MaskingOptions
from bertjax.data import tokenizer as tokenizer_lib

SPLITS = ("train", "eval")
EVAL_SEED = 0          # eval batches do not depend on the training seed: comparable across runs
DOCS_PER_GROUP = 64
BATCH_KEYS = ("input_ids", "segment_ids", "input_mask", "masked_positions", "masked_ids",
              "masked_weights", "nsp_label")
PACKING = ("none", "sequences", "full_sentences")
# Batch keys of packed rows that the model reads (BertModel's `packing` argument).
MODEL_PACKING_KEYS = ("position_ids", "sequence_ids", "cls_positions")


# --------------------------------------------------------------------------------------------
# Pairing: a group of documents -> instances.

SINGLE_SENTENCE_MODES = ("not_next", "split")


@dataclasses.dataclass(frozen=True)
class PairingOptions:
    max_seq_len: int = 128
    short_seq_prob: float = 0.1
    nsp: bool = True
    # A chunk of one sentence: 'not_next' (BERT: always NotNext with a random B) or 'split'
    # (IsNext half of the time, A and B cut from that sentence; balances the labels but gives
    # the classifier a cue: an untruncated pair split mid-sentence is always IsNext).
    single_sentence: str = "not_next"
    cls_id: int = tokenizer_lib.SPECIAL_IDS[tokenizer_lib.CLS]
    sep_id: int = tokenizer_lib.SPECIAL_IDS[tokenizer_lib.SEP]
    packing: str = "none"
    max_sequences_per_row: int = 16

    def __post_init__(self):
        if self.max_seq_len < 8:
            raise ValueError(f"data.max_seq_len={self.max_seq_len}: expected at least 8")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError(f"data.short_seq_prob={self.short_seq_prob}: expected a probability")
        if self.packing not in PACKING:
            raise ValueError(f"data.packing={self.packing!r}: expected one of {PACKING}")
        if self.packing == "full_sentences" and self.nsp:
            raise ValueError(
                "data.packing='full_sentences' is MLM-only (text runs across document "
                "boundaries, so there are no sentence pairs): set data.nsp=False, or use "
                "data.packing='sequences' to pack whole NSP pairs")
        if self.packing == "sequences" and self.max_sequences_per_row < 1:
            raise ValueError(f"data.max_sequences_per_row={self.max_sequences_per_row}: "
                             "expected a positive integer")
        if self.single_sentence not in SINGLE_SENTENCE_MODES:
            raise ValueError(f"data.nsp_single_sentence={self.single_sentence!r}: expected one "
                             f"of {SINGLE_SENTENCE_MODES}")


def create_instances(docs: Sequence[dict], doc_ids: Sequence[int], rng: np.random.Generator,
                     opts: PairingOptions) -> dict:
    """Pairs the sentences of a group of documents into unmasked rows.

    docs: records with `tokens` and `sentence_lengths`; doc_ids: their indices in the split
    (a NotNext partner must have another index). Returns input_ids, segment_ids, input_mask
    [n, max_seq_len] and nsp_label [n] (1 = B is random, NotNext), rows shuffled; packed rows
    have more keys (see the module docstring and packing.pack_rows).
    """
    # Python's Random for the many scalar draws (an order of magnitude cheaper per call than
    # numpy's), seeded from Grain's per-element generator so determinism is unchanged.
    r = random.Random(int(rng.integers(2**63)))
    offsets = np.cumsum([0] + [len(d["tokens"]) for d in docs])
    flat = np.concatenate([d["tokens"] for d in docs])
    # Sentence start offsets into `flat` (plus the end) per document, as Python ints.
    starts = [(offsets[k] + np.concatenate([[0], np.cumsum(d["sentence_lengths"])])).tolist()
              for k, d in enumerate(docs)]
    rows: list[tuple[int, int, int, int, int]] = []  # (a0, la, b0, lb, random_next), flat offsets
    if opts.packing == "full_sentences":
        flat = _full_sentences(docs, opts, rows)
    else:
        for k in range(len(docs)):
            if opts.nsp:
                others = [j for j in range(len(docs)) if doc_ids[j] != doc_ids[k]]
                _pair_document(starts[k], others, starts, r, opts, rows)
            elif opts.packing == "sequences":
                _cut_document(offsets[k], offsets[k + 1], r, opts, rows)
            else:
                _chunk_document(starts[k], r, opts, rows)
    r.shuffle(rows)
    rows = np.array(rows, np.int64).reshape(-1, 5)
    if opts.packing == "sequences":
        return packing.pack_rows(_assemble(flat, rows, opts), r, opts.max_sequences_per_row,
                                 opts.nsp)
    return _assemble(flat, rows, opts)


def _pair_document(starts, others, all_starts, r, opts, rows) -> None:
    """BERT's create_instances_from_document over sentence start offsets."""
    max_tokens = opts.max_seq_len - 3
    target = max_tokens
    if r.random() < opts.short_seq_prob:
        target = r.randint(2, max_tokens)
    n = len(starts) - 1
    chunk_start, i = 0, 0
    while i < n:
        length = starts[i + 1] - starts[chunk_start]
        if i == n - 1 or length >= target:
            k = i - chunk_start + 1
            random_next = r.random() < 0.5
            if k >= 2:
                a_end = r.randint(chunk_start + 1, i)  # A = sentences [chunk_start, a_end)
                a0, la = starts[chunk_start], starts[a_end] - starts[chunk_start]
                b0, lb = starts[a_end], starts[i + 1] - starts[a_end]
            elif length >= 2 and not random_next and opts.single_sentence == "split":
                # One sentence, balanced variant: an IsNext B is the sentence's tail.
                a0, la = starts[i], r.randint(1, length - 1)
                b0, lb = a0 + la, length - la
                a_end = i + 1
            else:
                a0, la, a_end = starts[i], length, i + 1
                random_next, b0, lb = True, 0, 0
            if random_next and others:
                b0, lb = _random_span(all_starts[others[r.randrange(len(others))]],
                                      target - la, r)
                i = a_end - 1  # the sentences after A were not used: put them back
            elif random_next:  # make_dataset guarantees two documents per group; this is a bug
                raise AssertionError("a group of documents with a single distinct document")
            la, lb, a0, b0 = _truncate_pair(a0, la, b0, lb, max_tokens, r)
            rows.append((a0, la, b0, lb, int(random_next)))
            chunk_start = i + 1
        i += 1


def _random_span(starts, target_b, r):
    """Whole sentences of another document from a random sentence on, about target_b tokens."""
    first = r.randrange(len(starts) - 1)
    end = first + 1
    while end < len(starts) - 1 and starts[end] - starts[first] < target_b:
        end += 1
    return starts[first], starts[end] - starts[first]


def _truncate_pair(a0, la, b0, lb, max_tokens, r):
    """BERT's truncate_seq_pair in closed form: trim the longer side (B on ties) one token at a
    time, each token from the front or the back with equal probability."""
    excess = la + lb - max_tokens
    if excess <= 0:
        return la, lb, a0, b0
    if la > lb:
        gap = la - lb
        cut_a, cut_b = (excess, 0) if gap >= excess else (gap + (excess - gap) // 2,
                                                          (excess - gap + 1) // 2)
    else:
        gap = lb - la
        cut_a, cut_b = (0, excess) if gap >= excess else ((excess - gap) // 2,
                                                          gap + (excess - gap + 1) // 2)
    front_a = bin(r.getrandbits(cut_a)).count("1") if cut_a else 0
    front_b = bin(r.getrandbits(cut_b)).count("1") if cut_b else 0
    return la - cut_a, lb - cut_b, a0 + front_a, b0 + front_b


def _chunk_document(starts, r, opts, rows) -> None:
    """MLM-only rows: whole sentences of one document up to the target length; a sentence longer
    than the target is cut into target-sized pieces."""
    max_tokens = opts.max_seq_len - 2
    target = max_tokens
    if r.random() < opts.short_seq_prob:
        target = r.randint(2, max_tokens)
    n, i = len(starts) - 1, 0
    while i < n:
        first = i
        i += 1
        while i < n and starts[i + 1] - starts[first] <= target:
            i += 1
        begin, end = starts[first], starts[i]
        for a0 in range(begin, end, target):
            rows.append((a0, min(target, end - a0), 0, 0, 0))


def _full_sentences(docs, opts, rows) -> np.ndarray:
    """RoBERTa's FULL-SENTENCES: the documents as one stream with [SEP] between them, cut into
    rows of max_seq_len - 2 tokens ([CLS] and a final [SEP] added by _assemble); only the
    group's last row is short. Returns the stream that the rows index."""
    parts = []
    for k in range(len(docs)):
        if k:
            parts.append(np.array([opts.sep_id], np.int32))
        parts.append(np.asarray(docs[k]["tokens"], np.int32))
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    width = opts.max_seq_len - 2
    for a0 in range(0, len(flat), width):
        rows.append((a0, min(width, len(flat) - a0), 0, 0, 0))
    return flat


def _cut_document(begin: int, end: int, r, opts, rows) -> None:
    """MLM-only pieces for packing: the document cut every `target` tokens (not at sentence
    ends: a packed row fills its space exactly, and the pieces' tails pack together)."""
    max_tokens = opts.max_seq_len - 2
    target = max_tokens
    if r.random() < opts.short_seq_prob:
        target = r.randint(2, max_tokens)
    for a0 in range(begin, end, target):
        rows.append((a0, min(target, end - a0), 0, 0, 0))


def _assemble(flat: np.ndarray, rows: np.ndarray, opts: PairingOptions) -> dict:
    """[CLS] A [SEP] B [SEP] (or [CLS] A [SEP]) for all rows at once, by one gather."""
    a0, la, b0, lb, label = (rows[:, c:c + 1] for c in range(5))
    j = np.arange(opts.max_seq_len)[None, :]
    in_a = (j >= 1) & (j <= la)
    in_b = (j >= la + 2) & (j < la + 2 + lb)
    src = np.where(in_a, a0 + j - 1, np.where(in_b, b0 + j - la - 2, 0))
    ids = np.where(in_a | in_b, flat[src], 0).astype(np.int32)
    ids[:, 0] = opts.cls_id
    n = len(rows)
    ids[np.arange(n), la[:, 0] + 1] = opts.sep_id
    length = la + 2
    if opts.nsp:
        ids[np.arange(n), (la + lb)[:, 0] + 2] = opts.sep_id
        length = la + lb + 3
    input_mask = (j < length).astype(np.int32)
    segment_ids = ((j >= la + 2) & (j < length)).astype(np.int32)
    return {"input_ids": ids, "segment_ids": segment_ids, "input_mask": input_mask,
            "nsp_label": label[:, 0].astype(np.int32)}


class PairTransform(grain.transforms.RandomMap):
    """Reads a group of documents by index and pairs them (create_instances)."""

    def __init__(self, source, opts: PairingOptions):
        self.source, self.opts = source, opts

    def random_map(self, doc_ids, rng: np.random.Generator):
        doc_ids = [int(i) for i in doc_ids]
        docs = self.source.__getitems__(doc_ids)
        return create_instances(docs, doc_ids, rng, self.opts)


# --------------------------------------------------------------------------------------------
# The pipeline.

def prepare_if_needed(data_config, workdir: str | os.PathLike, *, tokenizer=None) -> str:
    """Prepares data_config.corpus into data_config.prepared_dir (or <workdir>/prepared) unless a
    matching preparation is there; returns that directory.

    Processes must not write the same directory concurrently: train_and_evaluate calls this on
    process 0 first and on the others after a barrier (they then find it prepared, or prepare
    a host-local prepared_dir). For a large corpus prepare once beforehand with
    scripts/prepare_pretraining_data.py.
    `tokenizer`: the loaded data_config.tokenizer, when the caller has it already.
    """
    prepared = data_config.prepared_dir or os.path.join(os.fspath(workdir), "prepared")
    prepare_lib.prepare(
        data_config.corpus, data_config.tokenizer if tokenizer is None else tokenizer, prepared,
        corpus_format=data_config.corpus_format, eval_fraction=data_config.eval_fraction,
        num_workers=data_config.get("prepare_workers", 0),
        tfds_data_dir=data_config.get("tfds_data_dir", ""))
    return prepared


def check_prediction_budget(pairing: PairingOptions, masking: MaskingOptions) -> None:
    """Packed rows are nearly full, so a budget below the masking rate of a full row would cap
    most rows and silently lower the rate: the budget must scale with the packed tokens."""
    need = math.ceil(masking.mask_rate * pairing.max_seq_len - 1e-9)
    if pairing.packing != "none" and masking.max_predictions < need:
        raise ValueError(
            f"data.max_predictions_per_seq={masking.max_predictions} (or the phase's) is below "
            f"mask_rate x max_seq_len = {masking.mask_rate:g} x {pairing.max_seq_len}; packed "
            f"rows are nearly full, so the rate would be capped: expected at least {need}")


def make_dataset(data_config, prepared: str | os.PathLike, *, split: str, global_batch_size: int,
                 seed: int, process_index: int = 0, process_count: int = 1,
                 max_seq_len: int | None = None, max_predictions_per_seq: int | None = None,
                 tokenizer=None, objective: str = "mlm") -> grain.IterDataset:
    """The Grain dataset behind make_iterator (see there)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size}: expected a positive multiple of "
                         f"process_count={process_count}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} outside [0, {process_count})")
    masking = MaskingOptions(
        mask_rate=data_config.mask_rate, mask_token_prob=data_config.mask_token_prob,
        random_token_prob=data_config.random_token_prob,
        max_predictions=max_predictions_per_seq or data_config.max_predictions_per_seq,
        whole_word=data_config.whole_word_mask)
    docs_per_group = data_config.get("docs_per_group", DOCS_PER_GROUP)
    if docs_per_group < 3:
        # Three consecutive documents of the shuffled, repeated stream always include two
        # different ones (two could be the same document at an epoch boundary).
        raise ValueError(f"data.docs_per_group={docs_per_group}: expected at least 3")

    tok = tokenizer_lib.load(data_config.tokenizer) if tokenizer is None else tokenizer
    pairing = PairingOptions(max_seq_len=max_seq_len or data_config.max_seq_len,
                             short_seq_prob=data_config.short_seq_prob, nsp=data_config.nsp,
                             single_sentence=data_config.get("nsp_single_sentence", "not_next"),
                             cls_id=tok.cls_id, sep_id=tok.sep_id,
                             packing=data_config.get("packing", "none"),
                             max_sequences_per_row=data_config.get("max_sequences_per_row", 16))
    check_prediction_budget(pairing, masking)
    builder = prepare_lib.load_builder(prepared)
    prepare_lib.check_compatible(dict(builder.info.metadata or {}), prepared, tokenizer=tok)
    if split not in builder.info.splits:
        raise ValueError(f"{str(prepared)!r} has no {split!r} split (splits: "
                         f"{sorted(builder.info.splits)}); eval needs data.eval_fraction > 0 at "
                         "preparation")
    source = builder.as_data_source(split)
    n_docs = len(source)
    shard = range(process_index, n_docs, process_count)
    if len(shard) < (2 if pairing.nsp else 1):
        raise ValueError(
            f"split {split!r} of {str(prepared)!r} gives host {process_index}/{process_count} "
            f"{len(shard)} document(s); NSP pairs need at least 2 (NotNext B comes from another "
            "document). Add documents, raise eval_fraction, or set data.nsp=False.")

    seed = EVAL_SEED if split == "eval" else seed
    if process_index:
        # Every shard its own random stream: with one seed, all hosts would draw the same
        # pairing choices and the same masking keys for their (different) rows.
        seed = int(np.random.SeedSequence([seed, process_index]).generate_state(1)[0] >> 1)
    per_host = global_batch_size // process_count
    ds = grain.MapDataset.range(process_index, n_docs, process_count)  # disjoint host shards
    ds = ds.shuffle(seed=seed).repeat()  # a new order every epoch
    ds = ds.batch(docs_per_group, batch_fn=np.asarray)
    ds = ds.random_map(PairTransform(source, pairing), seed=seed)  # new pairs every epoch
    num_workers = data_config.get("num_workers", 0)
    # A couple of groups ahead overlap pairing with the training step; a deep buffer would only
    # hold memory (a group is ~1k rows).
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=1 if num_workers else 2,
                                              prefetch_buffer_size=2))
    it = grain.experimental.RebatchIterDataset(it, per_host, drop_remainder=True)
    it = it.random_map(objectives.get(objective).batch_maker(tok, masking), seed=seed + 1)
    if num_workers:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return it


def make_iterator(data_config, prepared: str | os.PathLike, *, split: str = "train",
                  global_batch_size: int, seed: int, process_index: int = 0,
                  process_count: int = 1, shards: int = 0, max_seq_len: int | None = None,
                  max_predictions_per_seq: int | None = None,
                  tokenizer=None, objective: str = "mlm") -> grain.DatasetIterator:
    """An endless iterator of this host's batches (global_batch_size // process_count rows).

    The documents are split into `shards` disjoint shards (0: one per process), each with its
    own stream of global_batch_size // shards rows per batch; a process reads its consecutive
    block of shards and concatenates their rows. The global batch depends on the shard count,
    not on the number of processes: shards=N on one process gives N processes' global batches.

    Batches are dicts of numpy arrays: input_ids, segment_ids, input_mask [b, max_seq_len]
    (int32), masked_positions, masked_ids (int32) and masked_weights (float32)
    [b, max_predictions], nsp_label [b] (int32, 1 = NotNext). With data.packing='sequences'
    also position_ids, sequence_ids [b, max_seq_len] and, with NSP, cls_positions, nsp_label,
    nsp_weights [b, max_sequences_per_row] (see packing.pack_rows). Eval ignores `seed` (EVAL_SEED).
    A grain.DatasetIterator: get_state()/set_state() round-trip JSON (Orbax: grain.checkpoint).
    `tokenizer`: the loaded data_config.tokenizer, when the caller has it already. `objective`
    (bertjax/objectives.py): 'ltr' makes the targets next tokens (data/ltr.py), nothing masked.
    """
    shards = shards or process_count
    if shards % process_count:
        raise ValueError(f"data.shards={shards}: expected a multiple of the {process_count} "
                         "processes (or 0: one shard per process)")
    if shards != process_count and global_batch_size % shards:
        raise ValueError(f"train.batch_size={global_batch_size} is not divisible by "
                         f"data.shards={shards}")
    per_process = shards // process_count
    datasets = [make_dataset(data_config, prepared, split=split,
                             global_batch_size=global_batch_size, seed=seed,
                             process_index=s, process_count=shards, max_seq_len=max_seq_len,
                             max_predictions_per_seq=max_predictions_per_seq,
                             tokenizer=tokenizer, objective=objective)
                for s in range(process_index * per_process, (process_index + 1) * per_process)]
    if len(datasets) == 1:
        return iter(datasets[0])
    return iter(grain.experimental.ZipIterDataset(datasets).map(
        lambda parts: {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}))

