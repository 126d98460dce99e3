"""Tent: minimise the mean entropy of the whole-gallery predictions (docs/method.md section 6).

Z = Q G^T / tau_b,   L = mean_{i valid} H(softmax(Z_i))

References:
  Wang et al., "Tent: fully test-time adaptation by entropy minimization", ICLR 2021.
  Li et al., "Test-time adaptation for cross-modal retrieval with query shift", ICLR 2025
  (the TCR code, whose baseline constants rest_jax keeps; docs/method.md section 6).
"""

from __future__ import annotations

import jax

from rest_jax.methods.base import Method
from rest_jax.methods.baseline_common import entropy_method
from rest_jax.numerics import entropy, masked_mean


def tent_loss(logits: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean row entropy of ``softmax(logits)`` over the valid rows (0 if none).

    Args:
      logits: (B, N) baseline logits.
      valid: (B,) bool, false on padded rows.

    Returns:
      Scalar loss.
    """
    return masked_mean(entropy(logits), valid)


def tent() -> Method:
    """Tent as a stateless :class:`rest_jax.methods.base.Method`."""
    return entropy_method(lambda ctx, logits: (tent_loss(logits, ctx.valid), {}))
