"""READ's objective on whole-gallery predictions (docs/method.md section 6).

    p_i = softmax(Z_i),  L_ra = mean_i(-pmax_i log pmax_i),  L_bal = H(softmax(sum_i p_i))
    L = L_ra - L_bal

Sums and means run over the valid rows only.

References:
  Yang et al., "Test-time adaptation against multi-modal reliability bias", ICLR 2024.
  Li et al., "Test-time adaptation for cross-modal retrieval with query shift", ICLR 2025
  (the TCR code, whose baseline constants rest_jax keeps; docs/method.md section 6).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rest_jax.methods.base import Method, StepContext
from rest_jax.methods.baseline_common import entropy_method
from rest_jax.numerics import entropy, masked_mean


class ReadTerms(NamedTuple):
    """READ's loss and its parts.

    Attributes:
      loss: ``reliability - balance``.
      reliability: L_ra, mean of ``-pmax log pmax``.
      balance: L_bal, entropy of ``softmax(prob_sum)``.
      prob_sum: (N,) ``sum_i p_i`` over the valid rows.
    """

    loss: jax.Array
    reliability: jax.Array
    balance: jax.Array
    prob_sum: jax.Array


def read_loss(logits: jax.Array, valid: jax.Array) -> ReadTerms:
    """READ's objective of ``(B, N)`` logits with a ``(B,)`` validity mask."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    log_top = jnp.max(log_probs, axis=-1)
    reliability = masked_mean(-jnp.exp(log_top) * log_top, valid)
    prob_sum = jnp.sum(jnp.where(valid[:, None], jnp.exp(log_probs), 0), axis=0)
    balance = entropy(prob_sum)
    return ReadTerms(reliability - balance, reliability, balance, prob_sum)


def read_objective(ctx: StepContext, logits: jax.Array):
    """READ's loss on the batch's logits, with its two parts as metrics."""
    terms = read_loss(logits, ctx.valid)
    return terms.loss, {"reliability": terms.reliability, "balance": terms.balance}


def read() -> Method:
    """READ as a stateless :class:`rest_jax.methods.base.Method`."""
    return entropy_method(read_objective)
