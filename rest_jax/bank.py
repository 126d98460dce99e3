"""The source-like anchor bank, TCR's "queue" (docs/method.md section 2).

Fixed-size arrays with a validity mask, so that insertion and eviction jit without
recompilation. Each entry is a reliable pair ``(SI, q, g_hat, H)``:

  SI_i = 2 ||q_i - g_hat_i|| - ||q_i - mean(Q)|| - ||g_hat_i - mean(G_hat)||

(small = close to its match, far from both centres). An update inserts the ``int(rho * B)``
valid pairs of smallest SI, then keeps the M smallest-SI entries of bank and newcomers
(a stable sort: on ties, older entries first). From the bank come the margin
``m = ||mean normalize(q) - mean normalize(g)||`` and the entropy threshold ``E = max H``.

References:
  Li et al., "Test-time adaptation for cross-modal retrieval with query shift", ICLR 2025
  (TCR; code: https://github.com/XLearning-SCU/2025-ICLR-TCR):
  the source-like queue, docs/method.md eqs. (2.1)-(2.3).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rest_jax.numerics import (
    l2_normalize,
    masked_row_mean,
    safe_norm,
    stable_rank,
    valid_fraction_count,
)


class AnchorBank(NamedTuple):
    """Bank contents; rows with ``valid == False`` are empty slots.

    Attributes:
      score: (M,) reliability score SI of each entry.
      query: (M, d) stored query embedding.
      positive: (M, d) stored positive gallery embedding.
      entropy: (M,) entropy of the entry's refined prediction when it was inserted.
      valid: (M,) bool.
    """

    score: jax.Array
    query: jax.Array
    positive: jax.Array
    entropy: jax.Array
    valid: jax.Array


def init_bank(size: int, dim: int, dtype=jnp.float32) -> AnchorBank:
    """An empty bank of ``size`` slots for ``dim``-dimensional embeddings."""
    if size < 1:
        raise ValueError(f"bank size must be >= 1, got {size}")
    return AnchorBank(
        score=jnp.zeros((size,), dtype),
        query=jnp.zeros((size, dim), dtype),
        positive=jnp.zeros((size, dim), dtype),
        entropy=jnp.zeros((size,), dtype),
        valid=jnp.zeros((size,), bool),
    )


def reliability_scores(queries: jax.Array, positives: jax.Array, valid: jax.Array) -> jax.Array:
    """SI of every pair (docs/method.md, eq. (2.1)); the centres are means over the valid rows."""
    query_centre = masked_row_mean(queries, valid)
    positive_centre = masked_row_mean(positives, valid)
    return (
        2 * safe_norm(queries - positives)
        - safe_norm(queries - query_centre)
        - safe_norm(positives - positive_centre)
    )


def insert(
    bank: AnchorBank,
    scores: jax.Array,
    queries: jax.Array,
    positives: jax.Array,
    entropies: jax.Array,
    valid: jax.Array,
    *,
    ratio: float,
    enabled: jax.Array | bool = True,
) -> AnchorBank:
    """Inserts the ``int(ratio * n_valid)`` smallest-SI valid pairs and keeps the M smallest.

    Args:
      bank: the current bank (M slots).
      scores, queries, positives, entropies: the batch's SI (B,), q (B, d), g_hat (B, d), H (B,).
      valid: (B,) bool.
      ratio: rho.
      enabled: a traced or static bool; when false the bank is returned unchanged.

    Returns:
      The updated bank (same shapes and dtypes).
    """
    inf = jnp.asarray(jnp.inf, scores.dtype)
    n_insert = valid_fraction_count(valid, ratio)
    chosen = valid & (stable_rank(jnp.where(valid, scores, inf)) < n_insert) & enabled

    all_valid = jnp.concatenate([bank.valid, chosen])
    keys = jnp.where(all_valid, jnp.concatenate([bank.score, scores]), inf)
    # Invalid slots sort after every valid one, whatever their key.
    keep = jnp.lexsort((keys, ~all_valid))[: bank.score.shape[0]]

    def take(old, new):
        return jnp.concatenate([old, new.astype(old.dtype)])[keep]

    return AnchorBank(
        score=take(bank.score, scores),
        query=take(bank.query, queries),
        positive=take(bank.positive, positives),
        entropy=take(bank.entropy, entropies),
        valid=all_valid[keep],
    )


def margin(bank: AnchorBank) -> jax.Array:
    """``m = ||mean_k normalize(q_k) - mean_k normalize(g_k)||`` over valid entries (0 if none)."""
    gap = masked_row_mean(l2_normalize(bank.query), bank.valid) - masked_row_mean(
        l2_normalize(bank.positive), bank.valid
    )
    return safe_norm(gap)


def entropy_threshold(bank: AnchorBank) -> jax.Array:
    """``E = max_k H_k`` over the valid entries; ``-inf`` for an empty bank (no query passes)."""
    return jnp.max(jnp.where(bank.valid, bank.entropy, -jnp.inf))


def size(bank: AnchorBank) -> jax.Array:
    """Number of valid entries."""
    return jnp.sum(bank.valid)
