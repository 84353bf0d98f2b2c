"""Helpers of the bad-input catalogue (one test per row of the README's "What bad input gets").

Most rows are checked at the library level (fast); a few run an entry point as the user does, as a
subprocess, and check the one-line `error: ...` and exit code 1 of bertjax.cli.run."""
import hashlib
import os
import pathlib
import random
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
COMMITTED_TOKENIZER = REPO / "tokenizers" / "enwiki_30522_unigram.model"
WORDS = ("the a man woman dog cat ran sat on mat park quickly slowly happy sad film river city "
         "country capital people said company market price rose fell yes no").split()


def sentence(r: random.Random, lo: int = 4, hi: int = 12) -> str:
    return " ".join(r.choice(WORDS) for _ in range(r.randint(lo, hi))).capitalize() + "."


def bert_corpus(n_docs: int, seed: int = 0, newline: str = "\n") -> str:
    """Text in the BERT layout: one sentence per line, a blank line between documents."""
    r = random.Random(seed)
    docs = [newline.join(sentence(r) for _ in range(r.randint(2, 6))) for _ in range(n_docs)]
    return (newline * 2).join(docs) + newline


def checksums(root) -> dict:
    """sha256 of every file under root, by relative path: what 'nothing was lost' compares."""
    root = pathlib.Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_script(script: str, *args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """cli.run's contract: exit code 1 and exactly one line on stderr, `error: ...`."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
