"""SHOT (information maximisation plus confident pseudo-labels), as the TCR code runs it.

docs/method.md section 6; constants from the TCR code (threshold 0.9, coefficient 0.1):

    p_i = softmax(Z_i),  p_bar = mean_i p_i
    L_ent = mean_i H(p_i)
    L_div = sum_j p_bar_j log(p_bar_j + eps)             (eps = 1e-5; = -H(p_bar) up to eps)
    C = {i : max_j p_ij > confidence},  y_i = argmax_j p_ij (constant)
    L_ce = mean_{i in C} -log p_i[y_i]                   (0 when C is empty)
    L = L_ent + L_div + ce_weight * L_ce

Means run over the valid rows only.

References:
  Liang, Hu and Feng, "Do we really need to access the source data? Source hypothesis
  transfer for unsupervised domain adaptation", ICML 2020.
  Li et al., "Test-time adaptation for cross-modal retrieval with query shift", ICLR 2025
  (the TCR code, whose baseline constants rest_jax keeps; docs/method.md section 6).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rest_jax.methods.base import Method, StepContext
from rest_jax.methods.baseline_common import count, entropy_method
from rest_jax.numerics import entropy, masked_mean, masked_row_mean


class ShotTerms(NamedTuple):
    """SHOT's loss and its parts (fields named as in parity case P5).

    Attributes:
      loss: ``entropy + diversity_term + ce_weight * ce``.
      entropy: mean row entropy.
      diversity_term: ``sum_j p_bar_j log(p_bar_j + eps)``.
      confident: (B,) bool, pseudo-labelled rows.
      ce: mean pseudo-label cross-entropy over the confident rows.
    """

    loss: jax.Array
    entropy: jax.Array
    diversity_term: jax.Array
    confident: jax.Array
    ce: jax.Array


def shot_loss(
    logits: jax.Array,
    valid: jax.Array,
    *,
    confidence: float = 0.9,
    ce_weight: float = 0.1,
    eps: float = 1e-5,
) -> ShotTerms:
    """SHOT's objective of ``(B, N)`` logits (see module docstring)."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    mean_entropy = masked_mean(entropy(logits), valid)
    mean_prob = masked_row_mean(jnp.exp(log_probs), valid)
    diversity_term = jnp.sum(mean_prob * jnp.log(mean_prob + eps))
    labels = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1)
    log_label = jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
    confident = valid & (jnp.exp(jax.lax.stop_gradient(log_label)) > confidence)
    ce = masked_mean(-log_label, confident)
    loss = mean_entropy + diversity_term + ce_weight * ce
    return ShotTerms(loss, mean_entropy, diversity_term, confident, ce)


def shot_objective(ctx: StepContext, logits: jax.Array):
    """SHOT's loss on the batch's logits (constants from ``ctx.config``), its parts as metrics."""
    cfg = ctx.config
    terms = shot_loss(
        logits,
        ctx.valid,
        confidence=cfg.shot_confidence,
        ce_weight=cfg.shot_ce_weight,
        eps=cfg.shot_diversity_eps,
    )
    metrics = {
        "entropy": terms.entropy,
        "diversity": terms.diversity_term,
        "ce": terms.ce,
        "num_confident": count(terms.confident),
    }
    return terms.loss, metrics


def shot() -> Method:
    """SHOT as a stateless :class:`rest_jax.methods.base.Method`."""
    return entropy_method(shot_objective)
