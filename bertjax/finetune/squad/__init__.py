"""SQuAD v1.1 / v2.0: reader, features, decoding, official metric (pure numpy/Python)."""
