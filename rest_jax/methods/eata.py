"""EATA as adapted in the TCR code: two filters, entropy weights, no Fisher term.

docs/method.md section 6. Per optimisation step, with H_i the entropy of p_i = softmax(Z_i):

    F1 = the int(fraction * n_valid) lowest-entropy valid queries
    F2 = {i in F1 : cos(m, p_i) < cosine_margin}       (F2 = F1 while m is undefined)
    L  = mean_{i in F2} exp(entropy_margin - H_i) H_i  (weights are constants)
    m <- p_bar(F2) the first time F2 is non-empty, then m <- d m + (1 - d) p_bar(F2)

where p_bar(F2) is the mean prediction over F2 (a constant) and d = ``eata_mean_decay``. When F2
is empty, m stays and no optimiser step is made (the reference skips its step). The running mean
``m`` is a prediction over the whole gallery, so the state needs the gallery size N.

References:
  Niu et al., "Efficient test-time model adaptation without forgetting", ICML 2022.
  Li et al., "Test-time adaptation for cross-modal retrieval with query shift", ICLR 2025
  (the TCR code, whose baseline constants rest_jax keeps; docs/method.md section 6).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rest_jax.config import AdaptConfig
from rest_jax.methods.base import InnerResult, Method
from rest_jax.methods.baseline_common import (
    count,
    forward,
    guarded_update,
    lowest_entropy,
)
from rest_jax.numerics import entropy, masked_mean, masked_row_mean


class EataState(NamedTuple):
    """EATA's running state.

    Attributes:
      mean_prob: (N,) running mean prediction m (zeros while undefined).
      defined: bool scalar, m has been set (the reference's ``current_model_probs is not None``).
    """

    mean_prob: jax.Array
    defined: jax.Array


class EataTerms(NamedTuple):
    """EATA's loss, its filters and the next state."""

    loss: jax.Array
    selected_entropy: jax.Array
    selected: jax.Array
    weights: jax.Array
    state: EataState


def init_eata_state(num_gallery: int, dtype=jnp.float32) -> EataState:
    """An undefined running mean over ``num_gallery`` items."""
    dtype = jnp.promote_types(dtype, jnp.float32)
    return EataState(jnp.zeros((num_gallery,), dtype), jnp.zeros((), bool))


def cosine_to_mean(mean_prob: jax.Array, probs: jax.Array, eps: float = 1e-8) -> jax.Array:
    """``cos(m, p_i)`` per row, ``<m, p_i> / max(||m|| ||p_i||, eps)`` (torch's convention)."""
    dots = probs @ mean_prob
    norms = jnp.linalg.norm(probs, axis=-1) * jnp.linalg.norm(mean_prob)
    return dots / jnp.maximum(norms, eps)


def update_mean(state: EataState, probs: jax.Array, selected: jax.Array, decay: float):
    """The running-mean rule (module docstring); unchanged when nothing is selected."""
    batch_mean = masked_row_mean(probs, selected).astype(state.mean_prob.dtype)
    moved = jnp.where(state.defined, decay * state.mean_prob + (1 - decay) * batch_mean, batch_mean)
    has_any = jnp.any(selected)
    return EataState(jnp.where(has_any, moved, state.mean_prob), state.defined | has_any)


def eata_loss(
    logits: jax.Array,
    valid: jax.Array,
    state: EataState,
    *,
    fraction: float = 0.4,
    cosine_margin: float = 0.05,
    entropy_margin: float = 0.4,
    decay: float = 0.9,
) -> EataTerms:
    """EATA's objective of ``(B, N)`` logits, with the updated running mean.

    Args:
      logits: (B, N) baseline logits.
      valid: (B,) bool.
      state: the running mean before this step.
      fraction, cosine_margin, entropy_margin, decay: see the module docstring.

    Returns:
      :class:`EataTerms`; ``state`` is the running mean after this step.
    """
    h = entropy(logits)
    h_const = jax.lax.stop_gradient(h)
    probs = jax.nn.softmax(jax.lax.stop_gradient(logits), axis=-1)
    first = lowest_entropy(h, valid, fraction).selected
    redundant = jnp.abs(cosine_to_mean(state.mean_prob.astype(probs.dtype), probs)) >= cosine_margin
    selected = first & ~(state.defined & redundant)
    weights = jnp.exp(entropy_margin - h_const)
    loss = masked_mean(weights * h, selected)
    new_state = update_mean(state, probs, selected, decay)
    return EataTerms(loss, first, selected, weights, new_state)


def init_eata(config: AdaptConfig, *, dim: int, dtype, num_gallery: int | None = None) -> EataState:
    """The state is a running mean prediction over the gallery: it needs the gallery size."""
    if num_gallery is None:
        raise ValueError("EATA's state needs the gallery size: init(..., num_gallery=N)")
    return init_eata_state(num_gallery, dtype)


def eata_step(ctx, adapted, opt_state, method_state, step_index) -> InnerResult:
    """One EATA step (module docstring); no optimiser step when F2 is empty."""
    cfg = ctx.config
    num_gallery = ctx.gallery.shape[0]
    if method_state.mean_prob.shape != (num_gallery,):
        raise ValueError(
            f"EATA's running mean has shape {method_state.mean_prob.shape} but the gallery has "
            f"{num_gallery} items: build the state with init(..., num_gallery={num_gallery})"
        )

    def loss_fn(params):
        queries, logits = forward(ctx, params)
        terms = eata_loss(
            logits,
            ctx.valid,
            method_state,
            fraction=cfg.eata_fraction,
            cosine_margin=cfg.eata_cosine_margin,
            entropy_margin=cfg.eata_entropy_margin,
            decay=cfg.eata_mean_decay,
        )
        return terms.loss, (queries, terms)

    (loss, (queries, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(adapted)
    any_selected = jnp.any(terms.selected)
    adapted, opt_state = guarded_update(ctx, adapted, opt_state, grads, any_selected)
    metrics = {
        "loss": loss,
        "num_selected_entropy": count(terms.selected_entropy),
        "num_selected": count(terms.selected),
        "mean_defined": terms.state.defined.astype(jnp.int32),
    }
    return InnerResult(adapted, opt_state, terms.state, queries, metrics)


def eata() -> Method:
    """EATA as a :class:`rest_jax.methods.base.Method`; the state is :class:`EataState`."""
    return Method(init_eata, eata_step)
