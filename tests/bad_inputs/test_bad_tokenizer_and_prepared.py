"""Bad tokenizers and prepared data: missing or foreign models, special ids that differ, a
tokenizer that is not the one the data or the checkpoint recorded, an interrupted preparation."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import sentencepiece as spm
from bad_input_helpers import REPO, bert_corpus, checksums, sentence

from bertjax import checkpoint
from bertjax.data import prepare, pretraining, tokenizer
from bertjax.finetune import pretrained
from configs import glue as glue_config
from configs import pretrain


def test_missing_tokenizer_model(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tokenizer model .*nope.model' not found; "
                                                r"expected a SentencePiece .model file"):
        tokenizer.load(tmp_path / "nope.model")


def test_file_that_is_not_a_tokenizer_model(tmp_path):
    (tmp_path / "t.model").write_text("this is not a model")
    with pytest.raises(ValueError, match=r"t.model' is not a valid SentencePiece model"):
        tokenizer.load(tmp_path / "t.model")


def test_vocabulary_whose_special_ids_differ(tmp_path):
    """SentencePiece's own defaults (<unk>=0, <s>=1, </s>=2), not BERT's [PAD]=0 .. [MASK]=4."""
    import random
    r = random.Random(0)
    (tmp_path / "text.txt").write_text("\n".join(sentence(r) for _ in range(500)))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "text.txt"),
                                   model_prefix=str(tmp_path / "plain"), vocab_size=60,
                                   minloglevel=2)
    with pytest.raises(ValueError, match=r"plain.model' has special ids \{'\[PAD\]': -1, "
                                         r"'\[UNK\]': 0.*expected \{'\[PAD\]': 0, '\[UNK\]': 1"):
        tokenizer.load(tmp_path / "plain.model")


def test_tokenizer_vocab_size_differs_from_model_config(small_tokenizers):
    tok = tokenizer.load(small_tokenizers[0])
    with pytest.raises(ValueError, match=r"a.model has vocab_size=80 but model.vocab_size=30522; "
                                         r"set --config.model.vocab_size=80"):
        tokenizer.check_matches_model(tok, 30522)


def test_tokenizer_differs_from_the_checkpoints_record(tmp_path, small_tokenizers):
    a, b = (tokenizer.load(p) for p in small_tokenizers)
    ckpt = tmp_path / "ckpt"
    checkpoint.save_pretrained(str(ckpt), {"bert": {"w": np.ones(2, np.float32)}},
                               dict(vocab_size=80, hidden_size=8, num_layers=1, num_heads=2,
                                    intermediate_size=16), a.identity())
    config = glue_config.get_config("SST-2,tiny")
    with pytest.raises(ValueError, match=r"tokenizer mismatch: .*ckpt was pretrained with a.model "
                                         r"\(sha256=.*but the tokenizer given is b.model"):
        pretrained.resolve_init(config, str(ckpt), str(b.path))


def _prepared(tmp_path, tok_path, name="out"):
    (tmp_path / "c.txt").write_text(bert_corpus(20))
    prepare.prepare(str(tmp_path / "c.txt"), str(tok_path), tmp_path / name, eval_fraction=0.0,
                    num_workers=1, progress=False)
    return tmp_path / name


def test_prepared_dir_from_another_tokenizer_is_refused_and_left_intact(tmp_path,
                                                                        small_tokenizers):
    a, b = small_tokenizers
    out = _prepared(tmp_path, a)
    before = checksums(out)
    with pytest.raises(ValueError, match=r"out' was prepared with tokenizer 'a.model' .*not with "
                                         r"'b.model' .*tokenizers are never mixed"):
        prepare.prepare(str(tmp_path / "c.txt"), str(b), out, eval_fraction=0.0, progress=False)
    data = pretrain.get_config("tiny").data  # training from it with the other tokenizer, too
    data.tokenizer = str(b)
    with pytest.raises(ValueError, match=r"was prepared with tokenizer 'a.model'"):
        pretraining.make_iterator(data, str(out), global_batch_size=8, seed=0)
    assert checksums(out) == before


def test_prepared_dir_from_another_corpus_is_refused_and_left_intact(tmp_path, small_tokenizers):
    out = _prepared(tmp_path, small_tokenizers[0])
    before = checksums(out)
    (tmp_path / "other.txt").write_text(bert_corpus(5))
    with pytest.raises(ValueError, match=r"out' was prepared from corpus '.*c.txt', not "
                                         r"'.*other.txt'; use another data.prepared_dir"):
        prepare.prepare(str(tmp_path / "other.txt"), str(small_tokenizers[0]), out,
                        eval_fraction=0.0, progress=False)
    assert checksums(out) == before


_PREPARE = textwrap.dedent("""
    import sys
    from bertjax.data import prepare
    prepare.prepare(sys.argv[1], sys.argv[2], sys.argv[3], eval_fraction=0.0, num_workers=1,
                    progress=False, unit_bytes=8192)
""")


def _records(prepared_dir):
    source = prepare.load_builder(prepared_dir).as_data_source("train")
    return [(r["tokens"].tolist(), r["sentence_lengths"].tolist()) for r in source]


def test_preparation_killed_midway_then_rerun_completes_uncorrupted(tmp_path, small_tokenizers):
    tok = str(small_tokenizers[0])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"part{i}.txt").write_text(bert_corpus(500, seed=i))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _PREPARE, str(corpus), tok, str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(out.glob(".work-*/unit-*.json"))) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, ("preparation ended before it could be killed",
                                     proc.stderr.read()[-2000:])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = len(list(out.glob(".work-*/unit-*.json")))
    total = len(prepare.corpus_lib.open_corpus(str(corpus), unit_bytes=8192).units())
    assert 3 <= finished < total and not prepare.is_prepared(out), (finished, total)

    meta = prepare.prepare(str(corpus), tok, out, eval_fraction=0.0, num_workers=1,
                           progress=False, unit_bytes=8192)
    assert meta["stats"]["documents"] == 4 * 500
    assert not list(out.glob(".work-*")) and not list(out.glob("*/incomplete.*"))
    clean = prepare.prepare(str(corpus), tok, tmp_path / "clean", eval_fraction=0.0,
                            num_workers=1, progress=False, unit_bytes=8192)
    assert clean["stats"]["documents"] == meta["stats"]["documents"]
    assert _records(out) == _records(tmp_path / "clean")
