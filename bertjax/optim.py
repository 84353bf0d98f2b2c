"""Optimizer and learning-rate schedule from config (optax).

BERT's recipe: AdamW (b1 0.9, b2 0.999, eps 1e-6), weight decay 0.01 on every parameter except
LayerNorm parameters and biases, linear warmup then linear decay to 0, global-norm clipping 1.0.
Other optimizers and schedules are one config field away, for optimizer comparisons.
"""
from __future__ import annotations

import jax
import optax

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam", "adamw", "lamb")
SCHEDULES = ("warmup_linear_decay", "warmup_cosine_decay", "warmup_constant", "constant")


def check_config(optim_cfg) -> None:
    if optim_cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name={optim_cfg.name!r}: expected one of {OPTIMIZERS}")
    if optim_cfg.schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule={optim_cfg.schedule!r}: expected one of {SCHEDULES}")
    if optim_cfg.learning_rate <= 0:
        raise ValueError(f"optim.learning_rate={optim_cfg.learning_rate}: expected > 0")
    if optim_cfg.warmup_steps < 0:
        raise ValueError(f"optim.warmup_steps={optim_cfg.warmup_steps}: expected >= 0")


def make_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
    lr, warmup = optim_cfg.learning_rate, int(optim_cfg.warmup_steps)
    name = optim_cfg.schedule
    if name == "constant":
        return optax.constant_schedule(lr)
    warm = optax.linear_schedule(0.0, lr, max(warmup, 1))
    if name == "warmup_constant":
        after = optax.constant_schedule(lr)
    elif name == "warmup_linear_decay":
        after = optax.linear_schedule(lr, 0.0, max(total_steps - warmup, 1))
    else:  # warmup_cosine_decay
        after = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
    return optax.join_schedules([warm, after], [warmup])


def decay_mask(params):
    """True where weight decay applies: not LayerNorm parameters, not biases."""
    def keep(path, _):
        names = [getattr(k, "key", getattr(k, "name", str(k))) for k in path]
        return not any("LayerNorm" in str(n) or "bias" in str(n) for n in names)
    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation,
                                                          optax.Schedule]:
    check_config(optim_cfg)
    sched = make_schedule(optim_cfg, total_steps)
    c = optim_cfg
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
    return opt, sched
