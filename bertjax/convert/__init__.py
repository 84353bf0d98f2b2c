"""Checkpoint interop with the BERT ecosystem (Hugging Face, Google's TensorFlow releases).

  table.py         the one rename/transpose table, used by every direction
  hf.py            Hugging Face directory -> bertjax checkpoint, and bertjax -> HF directory
  google.py        Google TF checkpoint (bert_model.ckpt + bert_config.json) -> bertjax
  hf_tokenizer.py  SentencePiece unigram -> HF tokenizer.json (export of our own tokenizers)
  output.py        all-or-nothing output, fresh initialisation of parts a source lacks

An import writes OUT/checkpoints (read by `checkpoint.load_pretrained(OUT)`) and the WordPiece
tokenizer as OUT/vocab.txt + OUT/tokenizer_config.json (read by `data.wordpiece.load(OUT)`).
Entry point: scripts/convert_checkpoint.py.
"""
