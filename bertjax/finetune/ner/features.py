"""CoNLL sentences -> `[CLS] sub-tokens [SEP]` rows with per-token labels, and back to word tags.

Alignment (BERT's choice, Devlin et al. 2019 sec. 5.3): every word is encoded on its own and
its pieces concatenated; the word's label sits on one piece, its *label position*, and every
other piece has label -1 (weight 0 in the loss) and is ignored at prediction. Words are encoded
one by one with parse_specials=False (a word "[SEP]" in a sentence is text).

  WordPiece: the label position is the word's first piece (pieces never cross the whitespace
  and punctuation splits the pre-tokenizer makes, so the word-by-word pieces are the ones the
  whole sentence gets).
  SentencePiece: a word's pieces are the ones the whole sentence gets too (pieces never cross
  whitespace; on ../shared/data/conll2003's training sentences 2 of 14,041 differ, by a tie
  between equal-scoring segmentations of a number). But a word can begin with a bare "▁" (the
  word-start marker alone: ',' -> ['▁', ','], '%' -> ['▁', '%']; 706 of the 23,623 distinct
  training words with the 30k committed tokenizer, mostly punctuation and numbers). That piece
  is the same for all such words and carries none of the word, so the label goes on the first
  piece after it; the "▁" stays in the row (the model saw it there in pretraining).
  A word that encodes to no piece at all (only characters the normaliser drops, e.g. a
  zero-width space) becomes [UNK], so that every word has a position and a prediction. A
  literal "▁" in a word is whitespace to SentencePiece (it is how it writes spaces): the word
  "▁" alone has no piece (-> [UNK]), and "a▁b" is ['▁a', '▁b'], still one word labelled on '▁a'.

Long sentences are never truncated. A sentence whose pieces do not fit in max_seq_length - 2
is cut into windows of that many pieces, `stride` pieces apart (default half a window), as
SQuAD's doc_stride windows (squad.features.windows). Each label position is trained and
predicted in exactly one window: the one where it has the most context, min(left, right) +
0.01 * window length, the first window winning ties (run_squad.py's _check_is_max_context,
squad.features.max_context). In its other windows it is context with label -1, so an overlap is
neither counted twice in the loss nor predicted twice. `split_sentences` counts the sentences
that needed more than one window (for results.json).

Rows are stored ragged, as the fine-tuning core stores them (one flat token array plus offsets);
per-token arrays are aligned with `tokens`.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from bertjax.data.tokenizer import WORD_START
from bertjax.finetune.squad.features import max_context, windows

IGNORE = -1        # label of a position that is not a word's label position (weight 0)


@dataclasses.dataclass
class TokenFeatures:
    tokens: np.ndarray        # int32 [total]: every row's ids, [CLS] ... [SEP]
    offsets: np.ndarray       # int64 [rows + 1]: row i is tokens[offsets[i]:offsets[i + 1]]
    labels: np.ndarray        # int32 [total]: tag id at the positions that predict, else -1
    word_index: np.ndarray    # int32 [total]: the token's word in its sentence; -1 [CLS]/[SEP]
    predicts: np.ndarray      # bool [total]: the position whose logits give its word's tag
    sentence: np.ndarray      # int32 [rows]: the sentence of each row
    num_words: np.ndarray     # int32 [sentences]
    split_sentences: int      # sentences cut into more than one window

    def __len__(self) -> int:
        return len(self.sentence)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def weights(self) -> np.ndarray:
        """float32 [total]: 1 where a label counts in the loss."""
        return (self.labels != IGNORE).astype(np.float32)


def check_window_config(*, max_seq_length: int, stride: int | None = None) -> tuple[int, int]:
    """-> (pieces per window, stride); ValueError naming the field otherwise."""
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, (int, np.integer)) \
            or max_seq_length < 4:
        raise ValueError(f"max_seq_length={max_seq_length!r}: expected an integer >= 4 "
                         "([CLS], [SEP] and windows of at least 2 pieces)")
    max_tokens = int(max_seq_length) - 2
    if stride is None:
        return max_tokens, max(1, max_tokens // 2)
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) \
            or not 1 <= stride < max_tokens:
        raise ValueError(
            f"stride={stride!r}: expected an integer in [1, max_seq_length - 2 = {max_tokens}) "
            "so that consecutive windows of a long sentence overlap")
    return max_tokens, int(stride)


def bare_piece_ids(tok) -> frozenset[int]:
    """Ids of pieces that are only SentencePiece's word-start marker "▁" (none for WordPiece,
    whose vocabularies have no such marker)."""
    if tok.identity().get("kind") != "sentencepiece":
        return frozenset()
    return frozenset(i for i in range(tok.vocab_size) if tok.id_to_piece(i) == WORD_START)


def encode_words(words: Sequence[str], tok) -> list[list[int]]:
    """Each word's pieces, encoded alone; a word with none becomes [UNK]."""
    return [ids or [tok.unk_id] for ids in tok.encode_batch(list(words), parse_specials=False)]


def label_position(pieces: Sequence[int], bare: frozenset[int]) -> int:
    """Index of the piece that carries the word's label: the first that is not a bare "▁"."""
    for i, p in enumerate(pieces):
        if p not in bare:
            return i
    return 0


def build_features(words: Sequence[Sequence[str]], tags: Sequence[Sequence[int]] | None, tok,
                   *, max_seq_length: int, stride: int | None = None) -> TokenFeatures:
    """Rows for sentences `words` (tag ids `tags`, or None when unlabelled), in order; `tok` is
    either tokenizer (bertjax.data.tokenizer.load)."""
    max_tokens, stride = check_window_config(max_seq_length=max_seq_length, stride=stride)
    if tags is not None and [len(t) for t in tags] != [len(w) for w in words]:
        raise ValueError("tags and words differ in length for some sentence")
    num_words = np.array([len(w) for w in words], np.int32)
    pieces = encode_words([w for s in words for w in s], tok)
    bare = bare_piece_ids(tok)
    rows, split, first = [], 0, 0
    for s, n in enumerate(num_words):
        sent = pieces[first:first + n]
        first += n
        tag = np.asarray(tags[s], np.int32) if tags is not None else np.full(n, IGNORE, np.int32)
        sentence_rows = list(_rows(sent, tag, bare, max_tokens, stride))
        split += len(sentence_rows) > 1
        rows += [(s, *r) for r in sentence_rows]
    return _stack(rows, tok, num_words, split)


def _rows(pieces: list[list[int]], tags: np.ndarray, bare, max_tokens: int, stride: int):
    """(ids, word_index, predicts, labels) of one sentence's windows, without [CLS]/[SEP]."""
    lens = np.array([len(p) for p in pieces], np.int64)
    ids = np.array([i for p in pieces for i in p], np.int32)
    word_of = np.repeat(np.arange(len(pieces), dtype=np.int32), lens)
    starts = np.cumsum(lens) - lens
    label_at = starts + np.array([label_position(p, bare) for p in pieces], np.int64)
    is_label = np.zeros(len(ids), bool)
    is_label[label_at] = True
    label = np.full(len(ids), IGNORE, np.int32)
    label[label_at] = tags
    spans = windows(len(ids), max_tokens, stride) if len(ids) > max_tokens else [(0, len(ids))]
    owner = max_context(spans, len(ids)) if len(spans) > 1 else np.zeros(len(ids), np.int64)
    for w, (start, length) in enumerate(spans):
        cut = slice(start, start + length)
        predicts = is_label[cut] & (owner[cut] == w)
        yield ids[cut], word_of[cut], predicts, np.where(predicts, label[cut], IGNORE)


def _stack(rows, tok, num_words, split) -> TokenFeatures:
    def join(parts, dtype, edge):
        pad = np.array([edge], dtype)
        return (np.concatenate([np.concatenate([pad, np.asarray(p, dtype), pad]) for p in parts])
                if parts else np.zeros(0, dtype))

    lengths = np.array([len(r[1]) + 2 for r in rows], np.int64)
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate([np.concatenate([[tok.cls_id], r[1], [tok.sep_id]]) for r in rows]
                            ).astype(np.int32) if rows else np.zeros(0, np.int32)
    return TokenFeatures(
        tokens=tokens, offsets=offsets,
        labels=join([r[4] for r in rows], np.int32, IGNORE),
        word_index=join([r[2] for r in rows], np.int32, -1),
        predicts=join([r[3] for r in rows], bool, False),
        sentence=np.array([r[0] for r in rows], np.int32), num_words=num_words,
        split_sentences=int(split))


def word_logits(features: TokenFeatures, logits: np.ndarray) -> np.ndarray:
    """Per-token logits [rows, >= longest row, tags] (row for row with `features`, padded as
    batches are) -> [total words, tags]: each word's logits at its label position, words in
    sentence order."""
    logits = np.asarray(logits)
    lengths = features.lengths
    if logits.ndim != 3 or logits.shape[0] != len(features) or (
            len(features) and logits.shape[1] < lengths.max()):
        raise ValueError(f"logits of shape {logits.shape}: expected [{len(features)} rows, >= "
                         f"{int(lengths.max()) if len(features) else 0} positions, tags]")
    row = np.repeat(np.arange(len(features)), lengths)
    position = np.arange(len(features.tokens)) - features.offsets[row]
    pick = features.predicts
    word_start = np.concatenate([[0], np.cumsum(features.num_words)]).astype(np.int64)
    flat = word_start[features.sentence[row[pick]]] + features.word_index[pick]
    out = np.zeros((int(word_start[-1]), logits.shape[2]), logits.dtype)
    seen = np.zeros(len(out), np.int64)
    out[flat] = logits[row[pick], position[pick]]
    np.add.at(seen, flat, 1)
    if (seen != 1).any():  # every word is predicted at exactly one position, by construction
        raise ValueError(f"{int((seen != 1).sum())} word(s) without exactly one label position;"
                         " the features and the sentences disagree")
    return out


def decode(features: TokenFeatures, logits: np.ndarray) -> list[np.ndarray]:
    """Per-token logits -> each sentence's word tag ids (argmax), int32 [num_words]."""
    tags = word_logits(features, logits).argmax(-1).astype(np.int32)
    return np.split(tags, np.cumsum(features.num_words)[:-1]) if len(features.num_words) else []
