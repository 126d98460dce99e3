"""The QS-robust objective and its diagnostics (docs/method.md sec. 3), plus the contrastive loss.

  L = l_rem L_REM + l_uni L_UNI + l_gap L_GAP + l_con L_CON

Every function takes a boolean ``valid`` (B,) so that a padded batch gives the same value
(and gradient) as the unpadded one.

References:
  Li et al., "Test-time adaptation for cross-modal retrieval with query shift", ICLR 2025
  (TCR; code: https://github.com/XLearning-SCU/2025-ICLR-TCR):
  L_REM, L_UNI and L_GAP, docs/method.md eqs. (3.1)-(3.5).
  Li, Yang and Peng, REST, arXiv 2511.14416, 2025 (https://arxiv.org/abs/2511.14416):
  L_CON (3.6) and the consistency correlation diagnostic (3.7), reconstructions
  (docs/method.md 5.3).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rest_jax.numerics import (
    l2_normalize,
    masked_logits,
    masked_mean,
    masked_row_mean,
    safe_norm,
)


class RemTerms(NamedTuple):
    """Noise-robust entropy minimisation: the loss, the weights and the reliable set."""

    loss: jax.Array
    weights: jax.Array
    reliable: jax.Array
    num_reliable: jax.Array


def rem_loss(
    entropies: jax.Array, threshold: jax.Array, valid: jax.Array, eps: float = 1e-3
) -> RemTerms:
    """``L_REM = sum_{i in M} w_i H_i / |M|`` with ``w_i = max(0, 1 - sg(H_i) / (E + eps))``.

    ``M = {i valid : H_i <= E}``. With ``M`` empty the loss is 0 with zero gradient (the
    reference yields NaN there). TCR's noise-robust entropy, docs/method.md, eq. (3.2).

    Args:
      entropies: (B,) row entropies ``H`` of the refined prediction.
      threshold: scalar E (the bank's maximum entropy).
      valid: (B,) bool.
      eps: the 1e-3 in the weight's denominator.
    """
    reliable = valid & (entropies <= threshold)
    weights = jnp.maximum(0.0, 1.0 - jax.lax.stop_gradient(entropies) / (threshold + eps))
    weights = jnp.where(reliable, weights, 0.0)
    loss = masked_mean(weights * entropies, reliable)
    return RemTerms(loss, weights, reliable, jnp.sum(reliable))


def uniformity_loss(queries: jax.Array, valid: jax.Array, scale: float = 0.1) -> jax.Array:
    """``L_UNI = mean_i exp(-t ||q_i - mean(Q)||)`` with ``t = scale`` (a distance, not
    squared; the centre carries gradient). Minimising it spreads the queries.
    docs/method.md, eq. (3.3)."""
    centre = masked_row_mean(queries, valid)
    return masked_mean(jnp.exp(-scale * safe_norm(queries - centre)), valid)


def modality_gap(queries: jax.Array, positives: jax.Array, valid: jax.Array) -> jax.Array:
    """``||mean_i normalize(q_i) - mean_i normalize(g_hat_i)||`` over the valid rows."""
    return safe_norm(
        masked_row_mean(l2_normalize(queries), valid)
        - masked_row_mean(l2_normalize(positives), valid)
    )


def gap_loss(
    queries: jax.Array, positives: jax.Array, valid: jax.Array, margin: jax.Array
) -> jax.Array:
    """``L_GAP = (gap(Q, G_hat) - m)^2`` with m the bank's margin. docs/method.md, eq. (3.5)."""
    return jnp.square(modality_gap(queries, positives, valid) - margin)


def _off_diagonal_mask(valid: jax.Array) -> jax.Array:
    pair = valid[:, None] & valid[None, :]
    return pair & ~jnp.eye(valid.shape[0], dtype=bool)


def consistency_loss(
    queries: jax.Array,
    positives: jax.Array,
    reliable: jax.Array,
    valid: jax.Array,
    temperature: float = 0.1,
) -> jax.Array:
    """Query-gallery consistency (reconstruction of REST's L_CON, docs/method.md, eq. (3.6)).

    For reliable i: ``P^G_i = softmax_{j != i}(g_hat_i . g_hat_j / tau)`` (constant) and
    ``P^Q_i = softmax_{j != i}(q_i . q_j / tau)`` over the valid j; the loss is
    ``mean_{i reliable} KL(P^G_i || P^Q_i)``, 0 when no query is reliable.
    """
    pairs = _off_diagonal_mask(valid)
    g = jax.lax.stop_gradient(positives)
    log_pg = jax.nn.log_softmax(masked_logits(g @ g.T / temperature, pairs), axis=-1)
    log_pq = jax.nn.log_softmax(masked_logits(queries @ queries.T / temperature, pairs), axis=-1)
    kl = jnp.sum(jnp.where(pairs, jnp.exp(log_pg) * (log_pg - log_pq), 0.0), axis=-1)
    return masked_mean(kl, reliable & valid)


def consistency_correlation(
    queries: jax.Array, positives: jax.Array, valid: jax.Array
) -> jax.Array:
    """Diagnostic: ``mean_i pearson(row i of QQ^T, row i of G_hat G_hat^T)`` off the diagonal.

    Rows with fewer than two other valid queries are left out of the mean.
    """
    pairs = _off_diagonal_mask(valid)
    qq = queries @ queries.T
    gg = positives @ positives.T
    count = jnp.sum(pairs, axis=-1, keepdims=True)
    n = jnp.maximum(count, 1).astype(qq.dtype)

    def centred(x):
        return jnp.where(pairs, x - jnp.sum(jnp.where(pairs, x, 0), -1, keepdims=True) / n, 0)

    a, b = centred(qq), centred(gg)
    cov = jnp.sum(a * b, -1)
    denom = safe_norm(a) * safe_norm(b)
    pearson = jnp.where(denom > 0, cov / jnp.where(denom > 0, denom, 1), 0)
    return masked_mean(pearson, count[:, 0] >= 2)


def symmetric_contrastive_loss(
    queries: jax.Array,
    targets: jax.Array,
    temperature: float = 0.01,
    valid: jax.Array | None = None,
) -> jax.Array:
    """CLIP's symmetric InfoNCE over paired rows: ``(CE(Z, I) + CE(Z^T, I)) / 2``,
    ``Z = normalize(Q) normalize(T)^T / temperature``. Pair i is (queries[i], targets[i])."""
    if valid is None:
        valid = jnp.ones(queries.shape[0], bool)
    logits = l2_normalize(queries) @ l2_normalize(targets).T / temperature
    pairs = valid[:, None] & valid[None, :]
    logits = masked_logits(logits, pairs)
    diag = jnp.diagonal(logits)
    rows = jax.nn.logsumexp(logits, axis=1) - diag
    cols = jax.nn.logsumexp(logits, axis=0) - diag
    return 0.5 * (masked_mean(rows, valid) + masked_mean(cols, valid))


class BatchDiagnostics(NamedTuple):
    """Structure of a query batch against its retrieved items (the paper's observations)."""

    uniformity: jax.Array
    gap: jax.Array
    consistency_correlation: jax.Array


def diagnostics(
    queries: jax.Array, positives: jax.Array, valid: jax.Array, uniformity_scale: float = 0.1
) -> BatchDiagnostics:
    """Uniformity (lower = more spread), modality gap and consistency correlation of a batch."""
    return BatchDiagnostics(
        uniformity=uniformity_loss(queries, valid, uniformity_scale),
        gap=modality_gap(queries, positives, valid),
        consistency_correlation=consistency_correlation(queries, positives, valid),
    )
