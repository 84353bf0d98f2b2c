"""bertjax: a JAX/Flax codebase for pretraining and studying BERT-style encoders."""

__version__ = "0.1.0"
