"""Numerical primitives shared by the losses, the step, the methods and the models.

Masked means, a norm with a safe gradient, L2 normalisation, the (column-masked) softmax
entropy, a stable rank, the ``int(fraction * n_valid)`` count of the filters, and the inner
product and norm of a whole pytree. None gives NaN on an empty mask or a zero vector."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def masked_mean(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Mean of ``x`` over entries where ``mask`` is true; 0 (with zero gradient) when none is."""
    mask = jnp.broadcast_to(mask, x.shape)
    total = jnp.sum(jnp.where(mask, x, 0), axis=axis)
    count = jnp.sum(mask, axis=axis)
    return total / jnp.maximum(count, 1).astype(x.dtype)


def masked_row_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of the rows of ``x`` (N x d) whose ``mask`` (N,) is true; zeros if none is."""
    return masked_mean(x, mask[:, None], axis=0)


def safe_norm(x: jax.Array, axis=-1, keepdims=False) -> jax.Array:
    """Euclidean norm whose gradient is 0 (not NaN) at the origin."""
    sq = jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0)


def tree_vdot(a: Any, b: Any) -> jax.Array:
    """``<a, b>`` over every leaf of two pytrees of one structure, in at least float32.

    One dot product over the concatenated leaves, not one per leaf summed: a scalar that every
    leaf's update reads (decoupling's projection, SAM's scale) would otherwise carry the chain
    of per-leaf partial sums, which XLA copies into each leaf's kernel (compile time).
    """
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    dtype = jnp.result_type(jnp.float32, *leaves_a, *leaves_b)
    if not leaves_a:
        return jnp.zeros((), dtype)
    flat = lambda leaves: jnp.concatenate([jnp.ravel(x).astype(dtype) for x in leaves])
    return jnp.vdot(flat(leaves_a), flat(leaves_b))


def tree_norm(tree: Any) -> jax.Array:
    """The Euclidean norm of a whole pytree (:func:`tree_vdot`)."""
    return jnp.sqrt(tree_vdot(tree, tree))


def l2_normalize(x: jax.Array, axis=-1, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` (torch.nn.functional.normalize semantics), in ``x``'s dtype.

    The one normalisation of rest_jax: callers that want float32 from a bf16 tower cast first.
    """
    return x / jnp.maximum(safe_norm(x, axis=axis, keepdims=True), eps)


def masked_logits(logits: jax.Array, column_mask: jax.Array) -> jax.Array:
    """Replaces masked-out columns by a large finite negative (softmax weight exactly 0).

    A finite value rather than -inf keeps a fully masked row finite (uniform) instead of NaN.
    """
    very_negative = jnp.asarray(-0.5 * jnp.finfo(logits.dtype).max, logits.dtype)
    return jnp.where(column_mask, logits, very_negative)


def entropy(logits: jax.Array, column_mask: jax.Array | None = None) -> jax.Array:
    """Row entropy ``H_i = -sum_j p_ij log p_ij`` of ``softmax(logits)`` over unmasked columns."""
    if column_mask is None:
        column_mask = jnp.ones(logits.shape[-1], bool)
    column_mask = jnp.broadcast_to(column_mask, logits.shape)
    logp = jax.nn.log_softmax(masked_logits(logits, column_mask), axis=-1)
    return -jnp.sum(jnp.where(column_mask, jnp.exp(logp) * logp, 0), axis=-1)


def stable_rank(keys: jax.Array) -> jax.Array:
    """Position of each entry in a stable ascending sort of ``keys`` (ties: lower index first)."""
    order = jnp.argsort(keys, stable=True)
    return jnp.zeros_like(order).at[order].set(jnp.arange(keys.shape[0], dtype=order.dtype))


def valid_fraction_count(valid: jax.Array, fraction: float) -> jax.Array:
    """``int(fraction * n_valid)`` as an int32 scalar, ``n_valid`` the true entries of
    ``valid``. The products are computed in Python, ``int(fraction * n)`` for every
    ``n = 0..B``, as the reference code does (float32 could round ``0.3 * 10`` down to 2),
    and the table is indexed with ``n_valid``, so a padded batch counts as the unpadded one."""
    table = [int(fraction * n) for n in range(valid.shape[0] + 1)]
    return jnp.asarray(table, jnp.int32)[jnp.sum(valid)]
