"""The model's config: BertConfig (every field a run can set, checked on construction) and the
size table (tiny .. large) that model_config decodes. bert.py re-exports all of it."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from bertjax.models import attention

# name: (layers, hidden, heads). Devlin et al. 2019 (base, large) and Turc et al. 2019 (the rest).
SIZES = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}
POSITION_EMBEDDINGS = ("sinusoidal", "learned")
ACTIVATIONS = ("gelu", "gelu_tanh")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    position_embedding: str = "sinusoidal"   # 'sinusoidal' (default) | 'learned' (original BERT)
    hidden_act: str = "gelu"                 # 'gelu' (exact, erf) | 'gelu_tanh'
    pre_layer_norm: bool = False             # False: post-LN as in BERT
    layer_norm_eps: float = 1e-12
    hidden_dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    initializer_range: float = 0.02
    attention_impl: str = "einsum"           # 'einsum' | 'xla' | 'cudnn'
    dtype: str = "float32"                   # compute dtype
    param_dtype: str = "float32"
    remat: bool = False                      # rematerialise each layer in the backward pass
    scan_layers: bool = False                # nn.scan over layers (fast compile for deep models)
    size: str = ""                           # the size name this came from (a label only)
    # Causal self-attention: each position sees itself and what is left of it (the
    # left-to-right objective, objective='ltr'); the pooled output is then the last real token.
    causal: bool = False

    def __post_init__(self):
        def bad(key, value, expected):
            raise ValueError(f"model.{key}={value!r}: expected {expected}")

        for key in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                    "max_position_embeddings", "type_vocab_size"):
            if int(getattr(self, key)) < 1:
                bad(key, getattr(self, key), "a positive integer")
        if self.hidden_size % self.num_heads:
            bad("hidden_size", self.hidden_size,
                f"a multiple of num_heads={self.num_heads} (head_dim must be an integer)")
        if self.position_embedding not in POSITION_EMBEDDINGS:
            bad("position_embedding", self.position_embedding, f"one of {POSITION_EMBEDDINGS}")
        if self.hidden_act not in ACTIVATIONS:
            bad("hidden_act", self.hidden_act, f"one of {ACTIVATIONS}")
        for key in ("dtype", "param_dtype"):
            if getattr(self, key) not in DTYPES:
                bad(key, getattr(self, key), f"one of {DTYPES}")
        for key in ("hidden_dropout_rate", "attention_dropout_rate"):
            if not 0.0 <= getattr(self, key) < 1.0:
                bad(key, getattr(self, key), "a probability in [0, 1)")
        attention.check_implementation(self.attention_impl, self.attention_dropout_rate)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BertConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def model_config(size: str, **overrides) -> dict:
    """The full model config (a plain dict of BertConfig fields) for a named size."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; expected one of {list(SIZES)}")
    layers, hidden, heads = SIZES[size]
    d = BertConfig(num_layers=layers, hidden_size=hidden, num_heads=heads,
                   intermediate_size=4 * hidden, size=size).to_dict()
    d.update(overrides)
    return BertConfig.from_dict(d).to_dict()

