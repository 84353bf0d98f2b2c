"""Small random BERTs built in-process (no downloads) and the outputs both frameworks compare."""
import dataclasses

import numpy as np
import pytest
from flax import traverse_util

from bertjax.models import bert

WORDS = ("the a of and to in is hello world un ##able ##s ##ing , . ! ? ' x y z "
         "cafe naive 中 文 run ##ner").split()
VOCAB = 160
HF_SIZES = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, max_position_embeddings=40, type_vocab_size=3)


def write_vocab(path, size=VOCAB, words=WORDS):
    """A Google-layout vocabulary: [PAD]=0, [unused*], [UNK]=100 [CLS] [SEP] [MASK], words."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]",
                                                                 "[MASK]"]
    tokens += list(words)
    tokens += [f"w{i}" for i in range(size - len(tokens))]
    assert len(tokens) == size
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def randomize_(model, seed=0, scale=0.2):
    """Every parameter random (LayerNorm scales around 1): a zero bias or a unit scale would
    hide a wrong name mapping."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            p.copy_(1.0 + noise if name.endswith("LayerNorm.weight") else noise)
    return model.eval()


def make_hf(directory, cls_name="BertForPreTraining", seed=0, **overrides):
    """Saves a random transformers model + vocab.txt into `directory`; returns the model."""
    import torch
    import transformers
    torch.manual_seed(seed)
    config = transformers.BertConfig(**{**HF_SIZES, **overrides})
    if cls_name == "BertModelNoPooler":
        model = transformers.BertModel(config, add_pooling_layer=False)
    else:
        model = getattr(transformers, cls_name)(config)
    randomize_(model, seed)
    model.save_pretrained(directory)
    write_vocab(directory / "vocab.txt")
    return model


def batch(seed=0, vocab=VOCAB, types=3, length=24):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (3, length))
    segments = rng.integers(0, types, (3, length))
    mask = np.ones((3, length), np.int64)
    mask[1, 15:] = 0          # a padded row
    mask[2, 7:] = 0
    positions = np.array([[0, 5, 23], [1, 2, 14], [3, 6, 6]])
    return ids, segments, mask, positions


def random_params(cfg, seed=0, scale=0.2):
    """Random float32 bertjax params in cfg's layout (every value random, LayerNorm scales
    around 1), built from shapes alone: no model initialisation to compile."""
    from bertjax.convert import table
    rng = np.random.default_rng(seed)
    flat = {k: (rng.normal(0, scale, shape) + (1.0 if k.endswith("LayerNorm/scale") else 0.0))
            .astype(np.float32) for k, shape in table.expected_shapes(cfg).items()}
    if cfg.scan_layers:
        flat = table.stack_layers(flat, cfg.num_layers)
    return traverse_util.unflatten_dict(flat, sep="/")


def hf_outputs(model, ids, segments, mask, positions):
    """(sequence, pooled, MLM logits at positions, NSP logits) from a BertForPreTraining."""
    import torch
    t = lambda a: torch.tensor(np.asarray(a))  # noqa: E731
    with torch.no_grad():
        base = model.bert(input_ids=t(ids), token_type_ids=t(segments), attention_mask=t(mask))
        seq, pooled = base.last_hidden_state, base.pooler_output
        mlm, nsp = model.cls(seq, pooled)
    mlm = np.take_along_axis(mlm.numpy(), positions[..., None], axis=1)
    return seq.numpy(), pooled.numpy(), mlm, nsp.numpy()


def our_outputs(params, cfg, ids, segments, mask, positions):
    cfg = dataclasses.replace(cfg, hidden_dropout_rate=0.0, attention_dropout_rate=0.0)
    seq, pooled = bert.BertModel(cfg).apply({"params": params["bert"]}, ids, segments, mask)
    mlm, nsp = bert.BertForPreTraining(cfg).apply({"params": params}, ids, segments, mask,
                                                  positions)
    return tuple(np.asarray(x) for x in (seq, pooled, mlm, nsp))


def max_diffs(a, b):
    names = ("sequence", "pooled", "mlm", "nsp")
    return {n: float(np.abs(x - y).max()) for n, x, y in zip(names, a, b)}


@pytest.fixture(scope="session")
def hf_tools():
    pytest.importorskip("torch", reason="needs torch (pip install 'bertjax[interop]')")
    pytest.importorskip("transformers", reason="needs transformers (pip install 'bertjax[interop]')")
    pytest.importorskip("safetensors", reason="needs safetensors (pip install 'bertjax[interop]')")
    return dict(make_hf=make_hf, batch=batch, random_params=random_params, hf_outputs=hf_outputs, our_outputs=our_outputs,
                max_diffs=max_diffs, write_vocab=write_vocab, randomize_=randomize_)


@pytest.fixture(scope="session")
def vocab_tools():
    return dict(write_vocab=write_vocab, batch=batch, our_outputs=our_outputs,
                random_params=random_params)
