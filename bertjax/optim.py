"""Optimizer and learning-rate schedule from config (optax).

BERT's recipe: AdamW (b1 0.9, b2 0.999, eps 1e-6), weight decay 0.01 on every parameter except
LayerNorm parameters and biases, linear warmup then linear decay to 0, global-norm clipping 1.0.
Other optimizers and schedules are one config field away, for optimizer comparisons.

Fine-tuning sweeps a grid of learning rates with one compiled step: `make_optimizer(...,
peak_lr_in_state=True)` keeps the peak learning rate in the optimizer state
(optax.inject_hyperparams) instead of baking it into the step as a constant.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam", "adamw", "lamb")
SCHEDULES = ("warmup_linear_decay", "bert_linear", "warmup_cosine_decay", "warmup_constant",
             "constant")


def check_config(optim_cfg) -> None:
    if optim_cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name={optim_cfg.name!r}: expected one of {OPTIMIZERS}")
    if optim_cfg.schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule={optim_cfg.schedule!r}: expected one of {SCHEDULES}")
    if optim_cfg.learning_rate <= 0:
        raise ValueError(f"optim.learning_rate={optim_cfg.learning_rate}: expected > 0")
    if optim_cfg.warmup_steps < 0:
        raise ValueError(f"optim.warmup_steps={optim_cfg.warmup_steps}: expected >= 0")


def make_schedule(optim_cfg, total_steps: int, peak=None) -> optax.Schedule:
    """The schedule of `optim_cfg`, peaking at `peak` (default optim_cfg.learning_rate; may be a
    traced scalar, as the schedules are linear in it).

    warmup_linear_decay: 0 -> peak over the warmup, then peak -> 0 over the remaining steps.
    bert_linear: run_pretraining.py's schedule: one linear decay peak -> 0 from step 0 to
    `total_steps`, with the warmup ramp (0 -> peak) overriding the first steps, so at the end
    of warmup the rate drops to the decay line at peak * (1 - warmup/total)."""
    lr = optim_cfg.learning_rate if peak is None else peak
    warmup = int(optim_cfg.warmup_steps)
    name = optim_cfg.schedule
    if name == "constant":
        return optax.constant_schedule(lr)
    if name == "bert_linear":
        def bert_linear(step):
            decay = lr * jnp.maximum(1.0 - step / max(total_steps, 1), 0.0)
            # optimization.py: warmup lr = peak * step / warmup, used while step < warmup
            return jnp.where(step < warmup, lr * step / max(warmup, 1), decay)
        return bert_linear
    warm = optax.linear_schedule(0.0, lr, max(warmup, 1))
    if name == "warmup_constant":
        after = optax.constant_schedule(lr)
    elif name == "warmup_linear_decay":
        after = optax.linear_schedule(lr, 0.0, max(total_steps - warmup, 1))
    else:  # warmup_cosine_decay
        after = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
    return optax.join_schedules([warm, after], [warmup])


# Parameters that are not weights: BERT does not decay LayerNorm parameters or biases, and the
# ELMo scalar mix of feature-based transfer (glue/transfer.py) holds mixing coefficients.
_NO_DECAY = ("LayerNorm", "bias", "scalar_mix")


def decay_mask(params):
    """True where weight decay applies: not LayerNorm parameters, biases or scalar-mix
    coefficients. Works on nested trees and on flat {'a/b/c': leaf} dicts alike."""
    def keep(path, _):
        names = [getattr(k, "key", getattr(k, "name", str(k))) for k in path]
        return not any(word in str(n) for n in names for word in _NO_DECAY)
    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(optim_cfg, total_steps: int, *, peak_lr_in_state: bool = False
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """-> (optimizer, schedule). With `peak_lr_in_state` the peak learning rate is a value in
    the optimizer state, set per run with `set_peak_learning_rate`, and the schedule takes it
    as a second argument: schedule(step, peak)."""
    check_config(optim_cfg)
    if not peak_lr_in_state:
        sched = make_schedule(optim_cfg, total_steps)
        return _build(optim_cfg, sched), sched
    tx = optax.inject_hyperparams(
        lambda learning_rate: _build(optim_cfg, make_schedule(optim_cfg, total_steps,
                                                              learning_rate))
    )(learning_rate=optim_cfg.learning_rate)
    return tx, lambda step, peak: make_schedule(optim_cfg, total_steps, peak)(step)


def set_peak_learning_rate(opt_state, peak):
    """An optimizer state of make_optimizer(..., peak_lr_in_state=True) with a new peak."""
    return opt_state._replace(hyperparams={**opt_state.hyperparams,
                                           "learning_rate": jnp.asarray(peak, jnp.float32)})


def peak_learning_rate(opt_state) -> jax.Array:
    return opt_state.hyperparams["learning_rate"]


def _build(c, sched: optax.Schedule) -> optax.GradientTransformation:
    if c.name == "sgd":
        opt = optax.sgd(sched)
    elif c.name == "momentum":
        opt = optax.sgd(sched, momentum=c.momentum)
    elif c.name == "adagrad":
        opt = optax.adagrad(sched, eps=c.eps)
    elif c.name == "adam":
        opt = optax.adam(sched, b1=c.b1, b2=c.b2, eps=c.eps)
    elif c.name == "adamw":
        opt = optax.adamw(sched, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay,
                          mask=decay_mask)
    else:  # lamb
        opt = optax.lamb(sched, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay,
                         mask=decay_mask)
    if c.grad_clip_norm and c.grad_clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(c.grad_clip_norm), opt)
    return opt
