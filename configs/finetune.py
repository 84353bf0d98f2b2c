"""Fine-tuning configs for every task: `--config configs/finetune.py:<task>[,preset...]`.

<task> is a GLUE task (CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI), `all` (every GLUE
task found under --data_dir, one summary), SQuAD / SQuAD-v2 (extractive QA; the fields of
run_squad.py below), CoNLL-2003 (NER; fields from ner/kind.py:config_fields), or your own
data: `custom` (CSV/TSV/JSON Lines files) and IMDB (fields from own_data/kind.py:
config_fields). configs/glue.py is this file under its old name. Presets:
  tiny     local smoke/demo: tiny model (random init; or the checkpoint's), sequences of at
           most 64 tokens (SQuAD: 128), 1 epoch on at most 2,000 training examples (all of
           them with --config.max_train_examples=0), one learning rate and seed; full dev sets
  feature  feature-based transfer: frozen encoder, ELMo scalar mix, small classifier
  partial  only the top `trainable_layers` encoder layers (+ pooler and classifier) train
  grid     BERT's appendix grid: batch size in {16, 32} as well as the three learning rates
  gpu      bfloat16 compute and the fused cuDNN attention (no attention-probability dropout)

Every task kind has `head` ('linear', the paper's; or 'bilstm': a randomly initialised two-layer
BiLSTM between the encoder and the classifier, Table 5's "+ BiLSTM") and `lstm_hidden` (its units
per direction; 0 = the encoder's hidden size): `--config.head=bilstm`.

Presets apply left to right (`tiny,feature` keeps feature's learning rates). Every field can be
overridden: `--config.learning_rates='(1e-4,)' --config.num_seeds=3`.
"""
import ml_collections

from bertjax.finetune import kinds
from bertjax.finetune.glue import kind as glue_kind
from bertjax.finetune.glue.tasks import TASK_NAMES
from bertjax.finetune.ner import kind as ner_kind
from bertjax.finetune.own_data import kind as own_kind
from bertjax.finetune.squad import kind as squad_kind
from bertjax.models import bert


def get_config(arg: str = "SST-2", *, where: str = "configs/finetune.py",
               known: tuple = ()) -> ml_collections.ConfigDict:
    task, *presets = [a.strip() for a in (arg or "SST-2").split(",")]
    names = tuple(known or kinds.task_names()) + ("all",)
    lower = {t.lower(): t for t in names}
    if task.lower() not in lower:
        family = "GLUE " if known else ""
        raise ValueError(f"Unknown {family}task {task!r} in {where}; expected one of "
                         f"{list(names)}")
    c = ml_collections.ConfigDict()
    c.task = lower[task.lower()]
    kind = kinds.find(c.task)[0] if c.task != "all" else kinds.GLUE
    span, token = kind is kinds.SQUAD, kind is kinds.NER
    if not span and not token:
        c.source = "tsv"               # 'tsv' (--data_dir, GLUE download layout) | 'tfds'
    # Empty: the checkpoint's own tokenizer (the vocab.txt an import wrote beside it, or the
    # sentencepiece model its pretraining run recorded); without a checkpoint, the repository's
    # tokenizers/enwiki_30522_unigram.model. A tokenizer given here or with --tokenizer is
    # checked against the checkpoint's record (sha256).
    c.tokenizer = ""

    # --- Model. With --init_checkpoint the checkpoint's config is used and only the runtime
    # fields (dropout rates, attention_impl, dtype, remat) of this block apply; without one
    # (the random-init baseline) all of it applies, vocab_size taken from the tokenizer.
    c.model = ml_collections.ConfigDict(bert.model_config("base"))

    # --- Transfer mode.
    c.mode = "full"                    # 'full' | 'partial' | 'feature'
    c.trainable_layers = 1             # partial: how many top encoder layers train
    c.feature_hidden = 256             # feature: width of the classifier's hidden layer

    # --- Data.
    c.max_seq_length = 128
    c.buckets = (64, 128, 256)         # pad each batch only to the smallest bucket it fits
    c.max_train_examples = 0           # 0 = all; else a fixed random subset (smoke runs)
    c.max_eval_examples = 0            # 0 = all dev examples (SQuAD: questions)

    # --- Optimisation (Devlin et al. 2019, sec. 4 and appendix A.3).
    c.learning_rates = (5e-5, 3e-5, 2e-5)
    c.batch_sizes = (32,)              # global, split over all devices
    c.epochs = 3
    c.max_steps = 0                    # 0 = epochs decide; else a cap on steps
    c.warmup_fraction = 0.1
    c.optim = ml_collections.ConfigDict()   # as in configs/pretrain.py; bertjax.optim builds it
    c.optim.name = "adamw"
    c.optim.schedule = "warmup_linear_decay"  # warmup_fraction of the steps, then decay to 0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-6
    c.optim.weight_decay = 0.01        # not applied to LayerNorm parameters and biases
    c.optim.grad_clip_norm = 1.0       # 0 disables
    c.optim.momentum = 0.9             # optim.name='momentum' only

    # --- Devices: data parallel over every device of every host (bertjax.parallel).
    c.parallel = ml_collections.ConfigDict()
    c.parallel.mode = "jit"            # 'jit' (sharded jit over a mesh) | 'pmap'
    c.parallel.fsdp = False            # jit only: parameters and optimizer state sharded

    # --- Evaluation, early stopping, seeds.
    c.eval_batch_size = 128
    c.eval_every = 0                   # steps between dev evaluations; 0 = once per epoch
    c.early_stopping_patience = 0      # stop after this many evaluations without improvement
                                       # (0 = never stop; the best-on-dev parameters are kept)
    c.seed = 0                         # runs use seeds seed, seed + 1, ...
    c.num_seeds = 5                    # small tasks vary a lot from seed to seed
    c.num_seeds_large = 1              # SST-2, QNLI, QQP, MNLI (>= 50k training examples)
    c.predict_test = True              # write GLUE submission files
    c.log_every = 50

    if span:
        # The paper: v1.1 3 epochs at 5e-5, batch 32; v2.0 2 epochs at 5e-5, batch 48.
        c.learning_rates = (5e-5,)
        c.batch_sizes = (48,) if c.task == "SQuAD-v2" else (32,)
        c.epochs = 2 if c.task == "SQuAD-v2" else 3
    for p in presets:
        _apply_preset(c, p, where)
    if span:
        # run_squad.py's fields: max_seq_length 384, doc_stride 128, max_query_length 64,
        # max_answer_length 30, n_best_size 20, null_score_diff_threshold 0 (tiny: 128/32/32);
        # bertjax/finetune/squad/kind.py:config_fields documents each.
        c.update(squad_kind.config_fields(tiny="tiny" in presets))
    if token:
        # CoNLL-2003: head (linear | bilstm), features (feature mode, Table 7), lstm_hidden,
        # stride; bertjax/finetune/ner/kind.py:config_fields documents each.
        c.update(ner_kind.config_fields(tiny="tiny" in presets))
    if kind is kinds.GLUE:
        # GLUE (and `all`): head (linear | bilstm), lstm_hidden; glue/kind.py:config_fields.
        c.update(glue_kind.config_fields())
    if kind is kinds.OWN:
        # custom: train_file, dev_file, test_file (relative to --data_dir), text_columns,
        # label_column, regression, label_names; both: truncation and GLUE's head fields
        # (own_data/kind.py).
        c.update(own_kind.config_fields(c.task))
    return c


def _apply_preset(c: ml_collections.ConfigDict, name: str, where: str) -> None:
    if name == "tiny":
        c.model = ml_collections.ConfigDict(bert.model_config("tiny"))
        c.max_seq_length = 64
        c.buckets = (32, 64)
        c.max_train_examples = 2000
        c.max_eval_examples = 0        # dev sets are small enough to score in full
        c.epochs = 1
        # Measured on SST-2 (one epoch, one seed each): at 1e-3 both the random-init and a
        # briefly pretrained tiny model stayed at the majority class; at 3e-4 both learned.
        c.learning_rates = (3e-4,)
        c.batch_sizes = (32,)
        c.eval_batch_size = 64
        c.num_seeds = 1
        c.num_seeds_large = 1
        c.log_every = 10
    elif name == "feature":
        c.mode = "feature"
        # Only a small head trains, so it takes larger steps (as probing classifiers do).
        c.learning_rates = (1e-3, 3e-4, 1e-4)
    elif name == "partial":
        c.mode = "partial"
    elif name == "grid":
        c.batch_sizes = (16, 32)
    elif name == "gpu":
        c.model.dtype = "bfloat16"
        c.model.attention_impl = "cudnn"
        c.model.attention_dropout_rate = 0.0
    else:
        raise ValueError(f"Unknown preset {name!r} in {where}; expected one of "
                         "tiny, feature, partial, grid, gpu")
