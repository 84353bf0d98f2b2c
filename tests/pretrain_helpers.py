"""The tiny pretraining config the tests run, written out once.

`tiny_pretrain_config(prepared_dir, **overrides)` is `configs/pretrain.py:tiny` (or another
variant) at test shapes: sequence length 32, 5 predictions, batch 8, synchronous checkpoints,
one eval batch, a log row every step and no eval or checkpoint unless a test asks. A test passes
only what its point needs (its steps, its eval/checkpoint cadence, a larger shape where the
shape is what it checks) as dotted overrides: `tiny_pretrain_config(d, **{"train.steps": 30})`.
`TEST_SHAPES` is the same as `--config.KEY=VALUE` flags for the tests that run the scripts.
"""
from bertjax import sweep
from configs import pretrain

TEST_SHAPES = {
    "data.max_seq_len": 32,
    "data.max_predictions_per_seq": 5,
    "train.batch_size": 8,        # one row per simulated device (tests/conftest.py: 8)
    "train.log_every": 1,
    "train.eval_every": 1000,
    "train.eval_steps": 1,
    "train.checkpoint_every": 1000,
    "train.async_checkpointing": False,
    "optim.warmup_steps": 2,
}


def tiny_pretrain_config(prepared_dir, variant="tiny", **overrides):
    """The `variant` config at TEST_SHAPES reading `prepared_dir`, then `overrides` applied."""
    c = pretrain.get_config(variant)
    return sweep.apply_overrides(c, {**TEST_SHAPES, "data.prepared_dir": str(prepared_dir),
                                     **overrides})


def as_flags(overrides) -> list[str]:
    """Dotted overrides as the entry points' --config.KEY=VALUE flags."""
    return [f"--config.{k}={v}" for k, v in overrides.items()]
