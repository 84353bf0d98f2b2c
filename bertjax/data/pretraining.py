"""Pretraining input pipeline on Grain: documents -> NSP pairs -> batches -> dynamic masking.

  indices of this host's documents --shuffle per epoch--> groups of `docs_per_group` documents
  --create_instances (NSP pairing, random per epoch)--> [n, max_seq_len] arrays per group
  --rebatch--> fixed-size batches --mask_batch (fresh masks every epoch)--> numpy batch dicts

Pairing follows BERT's create_pretraining_data.py (per document: a target length, chunks of
whole sentences, A = the first k sentences, B = the true continuation or a span of another
document with the unused sentences put back, the longer side truncated at a random end), with
the NotNext partner drawn from the same group of shuffled documents rather than from the whole
corpus held in memory. The group's instances are shuffled together, so a batch mixes documents.

Every random choice comes from Grain's per-element RNG (seed x element index), so the same
config, seed and step give the same batch, and a restored iterator state continues exactly.
"""
from __future__ import annotations

import dataclasses
import os
import random
from typing import Sequence

import grain
import numpy as np

from bertjax.data import prepare as prepare_lib
from bertjax.data import tokenizer as tokenizer_lib

SPLITS = ("train", "eval")
EVAL_SEED = 0          # eval batches do not depend on the training seed: comparable across runs
DOCS_PER_GROUP = 64
BATCH_KEYS = ("input_ids", "segment_ids", "input_mask", "masked_positions", "masked_ids",
              "masked_weights", "nsp_label")


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

    def __post_init__(self):
        if self.max_seq_len < 8:
            raise ValueError(f"data.max_seq_len={self.max_seq_len}: expected at least 8")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError(f"data.short_seq_prob={self.short_seq_prob}: expected a probability")
        if self.single_sentence not in SINGLE_SENTENCE_MODES:
            raise ValueError(f"data.nsp_single_sentence={self.single_sentence!r}: expected one "
                             f"of {SINGLE_SENTENCE_MODES}")


def create_instances(docs: Sequence[dict], doc_ids: Sequence[int], rng: np.random.Generator,
                     opts: PairingOptions) -> dict:
    """Pairs the sentences of a group of documents into unmasked rows.

    docs: records with `tokens` and `sentence_lengths`; doc_ids: their indices in the split
    (a NotNext partner must have another index). Returns input_ids, segment_ids, input_mask
    [n, max_seq_len] and nsp_label [n] (1 = B is random, NotNext), rows shuffled.
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
    for k in range(len(docs)):
        if opts.nsp:
            others = [j for j in range(len(docs)) if doc_ids[j] != doc_ids[k]]
            _pair_document(starts[k], others, starts, r, opts, rows)
        else:
            _chunk_document(starts[k], r, opts, rows)
    r.shuffle(rows)
    return _assemble(flat, np.array(rows, np.int64).reshape(-1, 5), opts)


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


# --------------------------------------------------------------------------------------------
# Masking: a batch -> the same batch with masked input_ids and the prediction targets.

@dataclasses.dataclass(frozen=True)
class MaskingOptions:
    mask_rate: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    max_predictions: int = 20
    whole_word: bool = False

    def __post_init__(self):
        def bad(key, value, expected):
            raise ValueError(f"data.{key}={value!r}: expected {expected}")
        if not 0.0 < self.mask_rate <= 1.0:
            bad("mask_rate", self.mask_rate, "a rate in (0, 1]")
        for key in ("mask_token_prob", "random_token_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                bad(key, getattr(self, key), "a probability in [0, 1]")
        if self.mask_token_prob + self.random_token_prob > 1.0 + 1e-9:
            bad("random_token_prob", self.random_token_prob,
                f"at most 1 - mask_token_prob = {1.0 - self.mask_token_prob:g} (the rest of the "
                "selected tokens stay unchanged)")
        if self.max_predictions < 1:
            bad("max_predictions_per_seq", self.max_predictions, "a positive integer")


@dataclasses.dataclass(frozen=True, eq=False)
class Vocab:
    """What masking needs to know about the tokenizer, as arrays (cheap to send to workers)."""
    size: int
    mask_id: int
    special_ids: tuple[int, ...]
    word_start: np.ndarray  # bool[size]

    @classmethod
    def from_tokenizer(cls, tok: tokenizer_lib.Tokenizer) -> "Vocab":
        return cls(tok.vocab_size, tok.mask_id, tuple(sorted(tok.special_ids)),
                   tok.word_start_table())

    @property
    def ordinary_ids(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.size, dtype=np.int32), np.array(self.special_ids))


def mask_batch(batch: dict, rng: np.random.Generator, vocab: Vocab, opts: MaskingOptions,
               ordinary_ids: np.ndarray | None = None) -> dict:
    """BERT's masked-LM corruption, vectorised over a batch.

    Per row, round(rate * maskable) positions (stochastically rounded, so the rate holds in
    expectation also for short rows; at least 1, at most max_predictions) are drawn among
    non-special tokens; of those, mask_token_prob become [MASK], random_token_prob a random
    non-special token, the rest stay. Whole-word mode draws words, not pieces, and stops at the
    first word that does not fit. masked_positions are sorted; padding slots have weight 0.
    """
    ids = batch["input_ids"]
    b, length = ids.shape
    p = opts.max_predictions
    if ordinary_ids is None:
        ordinary_ids = vocab.ordinary_ids
    maskable = ~np.isin(ids, vocab.special_ids) & (batch["input_mask"] > 0)
    n_maskable = maskable.sum(axis=1)
    expected = n_maskable * opts.mask_rate
    n_predict = np.floor(expected + rng.random(b)).astype(np.int64)
    n_predict = np.clip(n_predict, np.minimum(1, n_maskable), np.minimum(p, n_maskable))

    keys = rng.random((b, length))
    if opts.whole_word:
        starts = vocab.word_start[ids] | ~maskable
        starts[:, 1:] |= ~maskable[:, :-1]  # e.g. B truncated mid-word starts a new word
        starts[:, 0] = True
        word = np.cumsum(starts, axis=1) - 1  # word number of every token within its row
        # One random key per word (keys of word number w = keys[:, w]); sorting by (key, position)
        # in integers keeps every word's tokens adjacent and in reading order.
        word_key = (np.take_along_axis(keys, word, axis=1) * 2**31).astype(np.int64)
        sort_key = np.where(maskable, word_key, 2**31) * length + np.arange(length)
        order = np.argsort(sort_key, axis=1)
        sorted_word = np.take_along_axis(word, order, axis=1)
        # A token is taken if its whole word ends within the first n_predict sorted tokens.
        take = _last_index_of_run(sorted_word) < n_predict[:, None]
        chosen_sorted = np.where(take, order, length)
    else:
        order = np.argsort(np.where(maskable, keys, 2.0), axis=1)
        rank = np.arange(length)[None, :]
        chosen_sorted = np.where(rank < n_predict[:, None], order, length)
    if length < p:  # more prediction slots than tokens: pad with "not chosen"
        chosen_sorted = np.pad(chosen_sorted, ((0, 0), (0, p - length)), constant_values=length)
    positions = np.sort(chosen_sorted, axis=1)[:, :p]  # chosen first (ascending), then `length`
    valid = positions < length
    positions = np.where(valid, positions, 0)

    rows = np.arange(b)[:, None]
    original = ids[rows, positions]
    u = rng.random((b, p))
    to_mask = valid & (u < opts.mask_token_prob)
    to_random = valid & ~to_mask & (u < opts.mask_token_prob + opts.random_token_prob)
    random_ids = ordinary_ids[rng.integers(0, len(ordinary_ids), size=(b, p))]
    new = np.where(to_mask, vocab.mask_id, np.where(to_random, random_ids, original))
    masked_ids = ids.copy()
    # Padding slots write position 0 ([CLS]) with its own value: harmless.
    masked_ids[rows, positions] = np.where(valid, new, original)
    out = dict(batch)
    out["input_ids"] = masked_ids.astype(np.int32)
    out["masked_positions"] = positions.astype(np.int32)
    out["masked_ids"] = np.where(valid, original, 0).astype(np.int32)
    out["masked_weights"] = valid.astype(np.float32)
    return out


def _last_index_of_run(x: np.ndarray) -> np.ndarray:
    """For each element of each row, the index of the last element of its run of equal values
    (runs are contiguous because tokens were sorted by word key)."""
    b, n = x.shape
    is_end = np.ones_like(x, dtype=bool)
    is_end[:, :-1] = x[:, 1:] != x[:, :-1]
    idx = np.where(is_end, np.arange(n)[None, :], n)
    # Reverse cumulative minimum: the nearest run end at or after each position.
    return np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1]


class MaskTransform(grain.transforms.RandomMap):
    """mask_batch as a Grain transform (a fresh mask every time a batch is produced)."""

    def __init__(self, vocab: Vocab, opts: MaskingOptions):
        self.vocab, self.opts = vocab, opts
        self.ordinary_ids = vocab.ordinary_ids

    def random_map(self, element, rng: np.random.Generator):
        return mask_batch(element, rng, self.vocab, self.opts, self.ordinary_ids)


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

def prepare_if_needed(data_config, workdir: str | os.PathLike) -> str:
    """Prepares data_config.corpus into data_config.prepared_dir (or <workdir>/prepared) unless a
    matching preparation is there; returns that directory.

    On several hosts, give each a local prepared_dir or prepare once beforehand with
    scripts/prepare_pretraining_data.py: hosts must not write the same directory concurrently.
    """
    prepared = data_config.prepared_dir or os.path.join(os.fspath(workdir), "prepared")
    prepare_lib.prepare(
        data_config.corpus, data_config.tokenizer, prepared,
        corpus_format=data_config.corpus_format, eval_fraction=data_config.eval_fraction,
        num_workers=data_config.get("prepare_workers", 0),
        tfds_data_dir=data_config.get("tfds_data_dir", ""))
    return prepared


def make_dataset(data_config, prepared: str | os.PathLike, *, split: str, global_batch_size: int,
                 seed: int, process_index: int = 0, process_count: int = 1,
                 max_seq_len: int | None = None,
                 max_predictions_per_seq: int | None = None) -> grain.IterDataset:
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

    tok = tokenizer_lib.load(data_config.tokenizer)
    pairing = PairingOptions(max_seq_len=max_seq_len or data_config.max_seq_len,
                             short_seq_prob=data_config.short_seq_prob, nsp=data_config.nsp,
                             single_sentence=data_config.get("nsp_single_sentence", "not_next"),
                             cls_id=tok.cls_id, sep_id=tok.sep_id)
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
    it = it.random_map(MaskTransform(Vocab.from_tokenizer(tok), masking), seed=seed + 1)
    if num_workers:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return it


def make_iterator(data_config, prepared: str | os.PathLike, *, split: str = "train",
                  global_batch_size: int, seed: int, process_index: int = 0,
                  process_count: int = 1, max_seq_len: int | None = None,
                  max_predictions_per_seq: int | None = None) -> grain.DatasetIterator:
    """An endless iterator of this host's batches (global_batch_size // process_count rows).

    Batches are dicts of numpy arrays: input_ids, segment_ids, input_mask [b, max_seq_len]
    (int32), masked_positions, masked_ids (int32) and masked_weights (float32)
    [b, max_predictions], nsp_label [b] (int32, 1 = NotNext). Eval ignores `seed` (EVAL_SEED).
    The iterator is a grain.DatasetIterator: get_state()/set_state() round-trip JSON, and
    Orbax saves it with grain.checkpoint.CheckpointSave / CheckpointRestore.
    """
    return iter(make_dataset(data_config, prepared, split=split,
                             global_batch_size=global_batch_size, seed=seed,
                             process_index=process_index, process_count=process_count,
                             max_seq_len=max_seq_len,
                             max_predictions_per_seq=max_predictions_per_seq))

