"""Corpora, tokenizers, preparation and the pretraining input pipeline.

Importing the package registers the corpus kinds named by a spec ('default', 'tfds:NAME') with
corpus.open_corpus; the modules implementing them import the interface, never the reverse.
"""
from bertjax.data import default_corpus, tfds_corpus  # noqa: F401  (registrations)
