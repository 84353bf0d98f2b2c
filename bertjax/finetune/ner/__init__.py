"""CoNLL-2003 NER: reader, word -> sub-token features and windows, entity-level metric (pure numpy/Python)."""
