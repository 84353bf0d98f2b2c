"""Small SQuAD files in the official layout, built in code (the tests never need real data)."""
import copy
import json

CONTEXT_A = "The Broncos defeated the Panthers 24–10 in Super Bowl 50, played in Santa Clara."
CONTEXT_B = "Paris is the capital of France. Its mayor is Anne Hidalgo."


def v1_raw():
    """Two articles, three questions; the first has three references (as dev files do)."""
    return {"version": "1.1", "data": [
        {"title": "Super_Bowl_50", "paragraphs": [{"context": CONTEXT_A, "qas": [
            {"id": "q1", "question": "Who won Super Bowl 50?", "answers": [
                {"text": "The Broncos", "answer_start": 0},
                {"text": "Broncos", "answer_start": 4},
                {"text": "Broncos", "answer_start": 4}]},
            {"id": "q2", "question": "Where was it played?", "answers": [
                {"text": "Santa Clara", "answer_start": CONTEXT_A.index("Santa Clara")}]},
        ]}]},
        {"title": "Paris", "paragraphs": [{"context": CONTEXT_B, "qas": [
            {"id": "q3", "question": "Who is the mayor of Paris?", "answers": [
                {"text": "Anne Hidalgo", "answer_start": CONTEXT_B.index("Anne")}]},
        ]}]},
    ]}


def v2_raw():
    """v1_raw plus is_impossible everywhere and one unanswerable question."""
    raw = copy.deepcopy(v1_raw())
    raw["version"] = "v2.0"
    for article in raw["data"]:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                qa["is_impossible"] = False
    raw["data"][1]["paragraphs"][0]["qas"].append(
        {"id": "q4", "question": "Who is the mayor of Lyon?", "is_impossible": True,
         "answers": [], "plausible_answers": [{"text": "Anne Hidalgo", "answer_start": 45}]})
    return raw


def write(path, raw):
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return path


class WhitespaceTokenizer:
    """Stands in for a tokenizer: one token per whitespace-separated word, ids from a growing
    vocabulary, so windows and positions can be worked out by hand."""
    pad_id, unk_id, cls_id, sep_id, mask_id = 0, 1, 2, 3, 4

    def __init__(self):
        self.vocab = {}

    def _id(self, word):
        return self.vocab.setdefault(word, 5 + len(self.vocab))

    def encode_batch(self, texts, parse_specials=True):
        return [[self._id(w) for w in t.split()] for t in texts]

    def encode_batch_with_offsets(self, texts, parse_specials=True):
        import re
        out = []
        for t in texts:
            words = list(re.finditer(r"\S+", t))
            out.append(([self._id(m.group()) for m in words], [m.span() for m in words]))
        return out
