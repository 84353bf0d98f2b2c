"""Fine-tuning speed, as JSON: train and eval examples/s and the decoding time of a task kind,
side by side with Hugging Face's Flax train step of the same head at the same shape when
--peer_python names a Python with transformers 4.47 (scripts/peer/hf_flax_finetune_step.py).

  python scripts/benchmark_finetune.py --squad_file ../shared/data/squad/dev-v1.1-articles-00-09.json \
      --peer_python /tmp/peer/bin/python                      # SQuAD at seq 384
  python scripts/benchmark_finetune.py --config configs/finetune.py:CoNLL-2003 \
      --conll_dir ../shared/data/conll2003 --peer_python /tmp/peer/bin/python   # NER at seq 128

SQuAD: the file's questions serve as both train and dev inputs (only the speed is measured).
CoNLL-2003: eng.train and eng.testa of --conll_dir.
"""
import json
import os
import subprocess

from absl import flags
from ml_collections import config_flags

from bertjax import cli
from bertjax.finetune import speed
from bertjax.finetune.ner import reader as ner_reader
from bertjax.finetune.squad import kind as squad_kind, reader

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
config_flags.DEFINE_config_file("config", os.path.join(_REPO, "configs", "finetune.py") +
                                ":SQuAD", "fine-tuning config (the task's)", lock_config=True)
flags.DEFINE_string("squad_file", None, "SQuAD: a v1.1 JSON file (its questions are timed)")
flags.DEFINE_string("conll_dir", None, "CoNLL-2003: the folder with eng.train and eng.testa")
flags.DEFINE_integer("steps", 10, "timed train steps")
flags.DEFINE_integer("layers", 4, "model shape (peer and bertjax alike)")
flags.DEFINE_integer("hidden", 256, "hidden size")
flags.DEFINE_integer("heads", 4, "attention heads")
flags.DEFINE_integer("batch", 8, "train batch size")
flags.DEFINE_integer("max_questions", 400, "questions / sentences used (0 = all)")
flags.DEFINE_string("peer_python", "", "Python of a venv with transformers==4.47.1 (optional)")


def main(argv):
    del argv
    f = flags.FLAGS
    c = f.config
    c.model.update(num_layers=f.layers, hidden_size=f.hidden, num_heads=f.heads,
                   intermediate_size=4 * f.hidden)
    c.batch_sizes, c.eval_batch_size = (f.batch,), 4 * f.batch
    c.tokenizer = cli.repo_file(c.tokenizer or "tokenizers/enwiki_30522_unigram.model")
    c.max_train_examples = c.max_eval_examples = f.max_questions
    if c.task not in ("SQuAD", "CoNLL-2003"):
        raise ValueError(f"task {c.task!r}: this benchmark times SQuAD or CoNLL-2003")
    if c.task == "CoNLL-2003":
        if not f.conll_dir:
            raise ValueError("--conll_dir is required for CoNLL-2003 (eng.train, eng.testa)")
        data = ner_reader.load(cli.user_path(f.conll_dir))
        head, labels = "token", len(data.tags)
    else:
        if not f.squad_file:
            raise ValueError("--squad_file is required for SQuAD (a v1.1 JSON file)")
        path = cli.user_path(f.squad_file)
        data = squad_kind.SquadData(reader.read(path, v2=False, training=True),
                                    reader.read(path, v2=False, training=False), {})
        head, labels = "qa", 2
    out = speed.measure(c, data, steps=f.steps)
    if f.peer_python:
        peer = subprocess.run(
            [f.peer_python, os.path.join(_REPO, "scripts", "peer", "hf_flax_finetune_step.py"),
             f"--head={head}", f"--labels={labels}",
             f"--layers={f.layers}", f"--hidden={f.hidden}", f"--heads={f.heads}",
             f"--seq={c.max_seq_length}", f"--batch={f.batch}",
             f"--vocab={out['vocab_size']}", f"--steps={f.steps}"],
            capture_output=True, text=True, check=True)
        out["peer"] = json.loads(peer.stdout.strip().splitlines()[-1])
        out["train_speedup_vs_peer"] = (out["train_examples_per_s"]
                                        / out["peer"]["examples_per_s"])
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    cli.run(main)
