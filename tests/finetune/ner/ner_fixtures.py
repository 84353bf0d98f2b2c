"""A tokenizer with hand-chosen pieces, so alignments can be checked position by position."""
from bertjax.data.tokenizer import WORD_START


class PieceTokenizer:
    """Words map to the pieces given in `pieces` (default: the word itself, one piece).
    Ids: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3, then pieces in first-seen order. Reports itself as a
    SentencePiece tokenizer, and has the bare word-start piece "▁"."""

    def __init__(self, pieces=None):
        self.pieces = dict(pieces or {})
        self.vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", WORD_START]
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = range(5)
        self.calls = []

    @property
    def vocab_size(self):
        return len(self.vocab)

    def identity(self):
        return {"kind": "sentencepiece"}

    def id_to_piece(self, i):
        return self.vocab[i]

    def piece_id(self, piece):
        if piece not in self.vocab:
            self.vocab.append(piece)
        return self.vocab.index(piece)

    def encode_batch(self, texts, parse_specials=True):
        self.calls.append(parse_specials)
        return [[self.piece_id(p) for p in self.pieces.get(t, [t] if t else [])] for t in texts]
