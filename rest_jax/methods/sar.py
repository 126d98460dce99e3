"""SAR: a filtered, sharpness-aware entropy step with a reset to the source state.

docs/method.md section 6, with the reference's two bugs fixed (see docs/baselines.md). One inner
step, all in one pure function (no Python branch on values):

  1. at theta: H_i = H(softmax(Z_i)); F1 = the int(fraction * n_valid) lowest-entropy valid
     queries, thr = max_{F1} H; L1 = mean_{F1} H; g1 = dL1/dtheta. The batch's scores come
     from this forward.
  2. SAM ascent (optax terms: ``sam_ascent``, a normalised gradient scaled by rho):
     e = rho g1 / (||g1|| + 1e-12), global norm over the adapted pytree.
  3. at theta + e: H'_i; F2 = {i in F1 : H'_i < thr}; L2 = mean_{F2} H'; g2 = dL2/dtheta|theta+e.
  4. restore theta (the perturbed copy is dropped); when F2 is non-empty, the optimiser steps
     from theta with g2; when F2 is empty, theta and the optimiser state stay as they were.
  5. EMA of L2, only when F2 is non-empty: ema <- L2 the first time, then
     ema <- d ema + (1 - d) L2.
  6. reset when the EMA is defined and below ``sar_reset_threshold``: the adapted params and
     the optimiser state become the initial ones (``ctx.initial``) and the EMA is undefined.

Order: update, then EMA, then reset, as the reference does per step; the reset also clears
the EMA (the reference reassigns the old, low EMA after its reset, so it fires again on the
next step). A fresh reset needs new evidence: an EMA rebuilt from post-reset losses.

References:
  Niu et al., "Towards stable test-time adaptation in dynamic wild world", ICLR 2023.
  Li et al., "Test-time adaptation for cross-modal retrieval with query shift", ICLR 2025
  (the TCR code, whose baseline constants rest_jax keeps; docs/method.md section 6).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rest_jax.config import AdaptConfig
from rest_jax.methods.base import InnerResult, Method
from rest_jax.methods.baseline_common import (
    EntropyFilter,
    count,
    forward,
    guarded_update,
    lowest_entropy,
)
from rest_jax.numerics import entropy, masked_mean, tree_norm


class SarState(NamedTuple):
    """SAR's running state.

    Attributes:
      ema: scalar EMA of the second-filter entropy (0 while undefined).
      ema_defined: bool scalar (the reference's ``ema is not None``).
      num_sar_resets: int32, resets so far.
    """

    ema: jax.Array
    ema_defined: jax.Array
    num_sar_resets: jax.Array


class SarFirstFilter(NamedTuple):
    """SAR's first filter on the unperturbed forward.

    Attributes:
      selected: (B,) bool, F1.
      threshold: thr, the largest entropy in F1 (0 when F1 is empty).
      count: int(fraction * n_valid).
      loss: L1, mean entropy over F1.
    """

    selected: jax.Array
    threshold: jax.Array
    count: jax.Array
    loss: jax.Array


def init_sar_state(dtype=jnp.float32) -> SarState:
    """An undefined EMA and no reset."""
    dtype = jnp.promote_types(dtype, jnp.float32)
    return SarState(jnp.zeros((), dtype), jnp.zeros((), bool), jnp.zeros((), jnp.int32))


def sar_first_filter(logits: jax.Array, valid: jax.Array, fraction: float = 0.4) -> SarFirstFilter:
    """F1, thr and L1 of ``(B, N)`` logits (step 1 of the module docstring)."""
    h = entropy(logits)
    kept: EntropyFilter = lowest_entropy(h, valid, fraction)
    return SarFirstFilter(kept.selected, kept.threshold, kept.count, masked_mean(h, kept.selected))


def sar_second_filter(logits: jax.Array, first: SarFirstFilter) -> tuple[jax.Array, jax.Array]:
    """F2 and L2 from the perturbed logits: the F1 queries still strictly below thr."""
    h = entropy(logits)
    selected = first.selected & (jax.lax.stop_gradient(h) < first.threshold)
    return masked_mean(h, selected), selected


def sam_ascent(rho: float, eps: float = 1e-12) -> optax.GradientTransformation:
    """SAM's adversarial step as a stateless optax transform: ``g -> rho g / (||g|| + eps)``.

    The global norm runs over the whole pytree; a zero gradient gives a zero perturbation.
    """

    def update_fn(updates, state, params=None):
        del params
        scale = rho / (tree_norm(updates) + eps)
        return jax.tree.map(lambda g: scale * g, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def update_ema(state: SarState, value: jax.Array, has_value: jax.Array, decay: float) -> SarState:
    """Step 5 of the module docstring."""
    value = value.astype(state.ema.dtype)
    moved = jnp.where(state.ema_defined, decay * state.ema + (1 - decay) * value, value)
    return state._replace(
        ema=jnp.where(has_value, moved, state.ema), ema_defined=state.ema_defined | has_value
    )


def init_sar(config: AdaptConfig, *, dim: int, dtype, num_gallery: int | None = None) -> SarState:
    """An undefined EMA and no reset, in the gallery's float dtype."""
    return init_sar_state(dtype)


def sar_step(ctx, adapted, opt_state, method_state, step_index) -> InnerResult:
    """One SAR step (module docstring, steps 1-6)."""
    cfg = ctx.config

    def first_loss(params):
        queries, logits = forward(ctx, params)
        first = sar_first_filter(logits, ctx.valid, cfg.sar_fraction)
        return first.loss, (queries, first)

    (loss, (queries, first)), grads = jax.value_and_grad(first_loss, has_aux=True)(adapted)
    ascent = sam_ascent(cfg.sar_rho)
    perturbation, _ = ascent.update(grads, ascent.init(adapted))
    perturbed = optax.apply_updates(adapted, perturbation)

    def second_loss(params):
        return sar_second_filter(forward(ctx, params)[1], first)

    (loss_second, second), grads_second = jax.value_and_grad(second_loss, has_aux=True)(perturbed)
    any_second = jnp.any(second)
    new_adapted, new_opt_state = guarded_update(ctx, adapted, opt_state, grads_second, any_second)

    state = update_ema(method_state, loss_second, any_second, cfg.sar_ema_decay)
    reset = state.ema_defined & (state.ema < cfg.sar_reset_threshold)
    ema_before_reset = state.ema
    new_adapted, new_opt_state = optax.tree.where(
        reset, (ctx.initial.adapted, ctx.initial.opt_state), (new_adapted, new_opt_state)
    )
    cleared = init_sar_state(state.ema.dtype)
    state = SarState(
        ema=jnp.where(reset, cleared.ema, state.ema),
        ema_defined=state.ema_defined & ~reset,
        num_sar_resets=state.num_sar_resets + reset.astype(jnp.int32),
    )
    metrics = {
        "loss": loss,
        "loss_second": loss_second,
        "num_selected_first": count(first.selected),
        "num_selected": count(second),
        "threshold": first.threshold,
        "perturbation_norm": tree_norm(perturbation),
        "ema": ema_before_reset,
        "sar_reset": reset.astype(jnp.int32),
    }
    return InnerResult(new_adapted, new_opt_state, state, queries, metrics)


def sar() -> Method:
    """SAR as a :class:`rest_jax.methods.base.Method`; the state is :class:`SarState`."""
    return Method(init_sar, sar_step)
