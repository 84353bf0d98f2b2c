"""GLUE fixtures written by the tests: every task's TSV layout as the GLUE download script writes
it, a synthetic learnable pair task, and a micro model config that compiles in seconds."""
import pathlib
import random

from configs import glue as glue_config

WORDS = ("the a man woman dog cat ran sat on mat park quickly slowly happy sad film movie good "
         "bad great boring plot actor question what who when where why is was were it this "
         "that river city country capital people said says company market price rose fell "
         "yes no").split()


def sentence(r: random.Random, lo=3, hi=9) -> str:
    return " ".join(r.choice(WORDS) for _ in range(r.randint(lo, hi))).capitalize() + "."


def _tsv(path: pathlib.Path, header, rows, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(map(str, r)) for r in rows]
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")


# Rows per split; different per task so that counts in assertions can't agree by accident.
SIZES = {"CoLA": (30, 11, 9), "SST-2": (28, 12, 10), "MRPC": (26, 10, 8), "STS-B": (32, 13, 7),
         "QQP": (24, 9, 11), "MNLI": (36, 12, 10), "QNLI": (22, 8, 6), "RTE": (20, 10, 5),
         "WNLI": (18, 7, 4)}
NLI = ("contradiction", "entailment", "neutral")
ENT = ("entailment", "not_entailment")


def write_task(root: pathlib.Path, task: str, seed: int = 0) -> dict:
    """Writes <root>/<task>/ in GLUE's download layout; returns {file name: data rows}."""
    r = random.Random(f"{task}-{seed}")
    d = root / task
    n_train, n_dev, n_test = SIZES[task]
    s = lambda: sentence(r)  # noqa: E731
    b01 = lambda: r.choice("01")  # noqa: E731
    counts = {}

    def both(name, header, make, n, bom=False):
        rows = [make(i) for i in range(n)]
        _tsv(d / name, header, rows, bom)
        counts[name] = n

    if task == "CoLA":  # no header in train/dev: source, label, original mark, sentence
        def cola(i):
            label = b01()
            return "gj04", label, "" if label == "1" else "*", s()
        for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
            both(name, None, cola, n)
        both("test.tsv", ["index", "sentence"], lambda i: (i, s()), n_test)
    elif task == "SST-2":
        for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
            both(name, ["sentence", "label"], lambda i: (s().lower() + " ", b01()), n)
        both("test.tsv", ["index", "sentence"], lambda i: (i, s()), n_test)
    elif task == "MRPC":  # BOM-prefixed header, bare double quotes in the text
        h = ["#1 ID", "#2 ID", "#1 String", "#2 String"]
        for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
            both(name, ["Quality"] + h, lambda i: (b01(), 1000 + i, 2000 + i, '"' + s(), s()),
                 n, bom=True)
        both("test.tsv", ["index"] + h, lambda i: (i, 3000 + i, 4000 + i, s(), s() + '"'),
             n_test, bom=True)
    elif task == "STS-B":
        h = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
             "sentence1", "sentence2"]
        def row(i):
            return [i, "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", s(),
                    s()]
        for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
            both(name, h + ["score"], lambda i: row(i) + [f"{r.uniform(0, 5):.3f}"], n)
        both("test.tsv", h, row, n_test)
    elif task == "QQP":
        for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
            both(name, ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                 lambda i: (i, 2 * i, 2 * i + 1, s() + "?", s() + "?", b01()), n)
        both("test.tsv", ["id", "question1", "question2"], lambda i: (i, s(), s()), n_test)
    elif task == "MNLI":
        h = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
             "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
             "sentence2"]
        def row(i):
            return [i, 100 + i, f"{100 + i}e", "fiction", "( ( x ) )", "( y )", "(ROOT (S x))",
                    "(ROOT (S y))", s(), s()]
        def labelled(i, annotators):
            gold = r.choice(NLI)
            return row(i) + [gold] * annotators + [gold]
        both("train.tsv", h + ["label1", "gold_label"], lambda i: labelled(i, 1),  # 12 columns
             n_train)
        for name in ("dev_matched.tsv", "dev_mismatched.tsv"):  # 16 columns, gold label last
            both(name, h + [f"label{k}" for k in range(1, 6)] + ["gold_label"],
                 lambda i: labelled(i, 5), n_dev)
        for name in ("test_matched.tsv", "test_mismatched.tsv"):
            both(name, h, row, n_test)
        both("../diagnostic/diagnostic.tsv", ["index", "sentence1", "sentence2"],
             lambda i: (i, s(), s()), n_test + 3)
    elif task == "QNLI":
        for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
            both(name, ["index", "question", "sentence", "label"],
                 lambda i: (i, s() + "?", s(), r.choice(ENT)), n)
        both("test.tsv", ["index", "question", "sentence"], lambda i: (i, s(), s()), n_test)
    elif task in ("RTE", "WNLI"):
        labels = ENT if task == "RTE" else ("0", "1")
        for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
            both(name, ["index", "sentence1", "sentence2", "label"],
                 lambda i: (i, s(), s(), r.choice(labels)), n)
        both("test.tsv", ["index", "sentence1", "sentence2"], lambda i: (i, s(), s()), n_test)
    else:
        raise ValueError(task)
    return counts


def write_keyword_task(root: pathlib.Path, n_train=1000, n_dev=200, n_test=50, a_len=(1, 3),
                       b_len=(6, 10)) -> pathlib.Path:
    """A synthetic, trivially learnable pair task in RTE's layout: sentence B repeats 'yes' or
    'no' (entailment iff 'yes'); sentence A repeats a random one of the two as a distractor, so
    the model must tell the segments apart. B is the longer so that a randomly initialised
    model finds the signal fast (with equal lengths some seeds sit on a plateau for
    hundreds of steps)."""
    r = random.Random(1)

    def make(n, labelled):
        rows = []
        for i in range(n):
            ka, kb = r.choice(["yes", "no"]), r.choice(["yes", "no"])
            row = [i, " ".join([ka] * r.randint(*a_len)), " ".join([kb] * r.randint(*b_len))]
            rows.append(row + ([ENT[kb != "yes"]] if labelled else []))
        return rows

    d = root / "RTE"
    h = ["index", "sentence1", "sentence2"]
    _tsv(d / "train.tsv", h + ["label"], make(n_train, True))
    _tsv(d / "dev.tsv", h + ["label"], make(n_dev, True))
    _tsv(d / "test.tsv", h, make(n_test, False))
    return root


def micro_config(task: str, **overrides):
    """configs/glue.py's tiny preset, shrunk further so that a run compiles in seconds."""
    c = glue_config.get_config(f"{task},tiny")
    # Dropout off: its random bits make the CPU compile several times slower. The learning test
    # turns it back on.
    c.model.update(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                   hidden_dropout_rate=0.0, attention_dropout_rate=0.0)
    c.feature_hidden = 32
    c.max_seq_length = 32
    c.buckets = ()  # one shape: one compile per step function
    c.batch_sizes = (16,)
    c.eval_batch_size = 16
    c.log_every = 1
    c.update(overrides)
    return c
