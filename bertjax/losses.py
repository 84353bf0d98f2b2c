"""Losses and accuracies, all in float32.

Each function returns sums and counts as well as means, so that callers can add them up over
micro-batches, devices and evaluation steps before dividing (a mean of means is wrong when
the number of masked positions differs between batches).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logits = logits.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def _weighted_metrics(prefix: str, logits, labels, weights) -> dict:
    w = weights.astype(jnp.float32)
    loss_sum = jnp.sum(_xent(logits, labels) * w)
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) * w)
    count = jnp.sum(w)
    denom = jnp.maximum(count, 1e-8)
    return {f"{prefix}_loss": loss_sum / denom, f"{prefix}_accuracy": correct / denom,
            f"{prefix}_loss_sum": loss_sum, f"{prefix}_correct": correct,
            f"{prefix}_count": count}


def mlm_metrics(logits: jax.Array, masked_ids: jax.Array, masked_weights: jax.Array) -> dict:
    """Masked-LM cross-entropy and accuracy over predicted positions.

    logits [B, P, V], masked_ids [B, P], masked_weights [B, P] (0 for padding predictions).
    """
    return _weighted_metrics("mlm", logits, masked_ids, masked_weights)


def nsp_metrics(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> dict:
    """Next-sentence prediction cross-entropy and accuracy. logits [B, 2], labels [B]."""
    w = jnp.ones(labels.shape, jnp.float32) if weights is None else weights
    return _weighted_metrics("nsp", logits, labels, w)


def classification_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy for GLUE classification tasks."""
    return jnp.mean(_xent(logits, labels))


def regression_loss(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error for GLUE regression (STS-B)."""
    diff = predictions.astype(jnp.float32) - targets.astype(jnp.float32)
    return jnp.mean(diff * diff)
