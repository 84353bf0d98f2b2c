"""A small CoNLL-2003 directory in the original layout (IOB1, -DOCSTART-), built in code."""
import random

PEOPLE = ["Peter Blackburn", "Anna Schmidt", "John", "Maria Lopez"]
PLACES = ["Brussels", "Germany", "New York", "Paris"]
ORGS = ["European Commission", "EU", "Reuters", "United Nations"]
FILLER = "said on the in of to a that was after talks met with".split()


def _sentence(r: random.Random, long: bool = False):
    """(words, IOB1 tags): filler words around a few entities; two adjacent PER entities once
    in a while (IOB1's one use of B-)."""
    words, tags = [], []
    for _ in range(r.randint(6, 9) if long else r.randint(1, 3)):
        words += [r.choice(FILLER) for _ in range(r.randint(0, 2))]
        tags += ["O"] * (len(words) - len(tags))
        kind, names = r.choice([("PER", PEOPLE), ("LOC", PLACES), ("ORG", ORGS)])
        name = r.choice(names).split()
        prefix = "B" if tags and tags[-1].endswith(kind) else "I"
        words += name
        tags += [f"{prefix}-{kind}"] + [f"I-{kind}"] * (len(name) - 1)
    words.append(".")
    tags.append("O")
    return words, tags


def write_split(path, n: int, seed: int, long_every: int = 0):
    r = random.Random(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    for i in range(n):
        words, tags = _sentence(r, long=bool(long_every) and i % long_every == 0)
        lines += [f"{w} NNP I-NP {t}" for w, t in zip(words, tags)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def conll_dir(root, n_train=48, n_dev=12, n_test=12, long_every=5):
    d = root / "CoNLL-2003"
    d.mkdir(parents=True)
    write_split(d / "eng.train", n_train, 0, long_every)
    write_split(d / "eng.testa", n_dev, 1, long_every)
    if n_test:
        write_split(d / "eng.testb", n_test, 2, long_every)
    return d


def read_predictions(path):
    """predictions_*.txt -> (words, gold, pred) per sentence."""
    out, cur = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur = []
            continue
        cur.append(line.split(" "))
    if cur:
        out.append(cur)
    return ([[x[0] for x in s] for s in out], [[x[1] for x in s] for s in out],
            [[x[2] for x in s] for s in out])
