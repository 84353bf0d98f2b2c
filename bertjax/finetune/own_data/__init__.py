"""Fine-tuning on your own data: CSV/TSV/JSON Lines files, the IMDB layout, TFDS sources, long-text
truncation and the metrics of the `custom` task (pure numpy/Python; TFDS only when asked)."""
