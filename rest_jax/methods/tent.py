"""Tent: minimise the mean entropy of the whole-gallery predictions (docs/method.md section 6).

Z = Q G^T / tau_b,   L = mean_{i valid} H(softmax(Z_i))

References:
  Wang et al., "Tent: fully test-time adaptation by entropy minimization", ICLR 2021.
  Li et al., "Test-time adaptation for cross-modal retrieval with query shift", ICLR 2025
  (the TCR code, whose baseline constants rest_jax keeps; docs/method.md section 6).
"""

from __future__ import annotations

import dataclasses

import jax

from rest_jax.config import AdaptConfig
from rest_jax.masked import entropy, masked_mean
from rest_jax.methods.base import InnerResult, gradient_update
from rest_jax.methods.baseline_common import forward


def tent_loss(logits: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean row entropy of ``softmax(logits)`` over the valid rows (0 if none).

    Args:
      logits: (B, N) baseline logits.
      valid: (B,) bool, false on padded rows.

    Returns:
      Scalar loss.
    """
    return masked_mean(entropy(logits), valid)


@dataclasses.dataclass(frozen=True)
class TentMethod:
    """Tent as a :class:`rest_jax.methods.base.Method` (stateless)."""

    name: str = "tent"

    def init(self, config: AdaptConfig, *, dim: int, dtype, num_gallery: int | None = None):
        return ()

    def inner_step(self, ctx, adapted, opt_state, method_state, step_index) -> InnerResult:
        def loss_fn(params):
            queries, logits = forward(ctx, params)
            return tent_loss(logits, ctx.valid), (queries, method_state, {})

        return gradient_update(ctx, adapted, opt_state, loss_fn)
