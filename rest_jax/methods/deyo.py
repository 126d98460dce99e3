"""DeYO: entropy filter, pseudo-label probability difference (PLPD) filter, combined weights.

docs/method.md section 6, as the TCR code runs it. Per optimisation step, p_i = softmax(Z_i):

  F1 = {i valid : H_i < h_(k+1)}, k = int(fraction * n_valid), h_(k+1) the (k+1)-th lowest
       valid entropy (strict: k queries when entropies are distinct; all when k = n_valid)
  image queries: x'_i = x_i with its grid x grid patches shuffled (a fresh permutation per
       image and step, from the batch key); p'_i = softmax(Z(x'_i)) (no gradient);
       y_i = argmax p_i; PLPD_i = p_i[y_i] - p'_i[y_i]; F2 = {i in F1 : PLPD_i > plpd_threshold}
  text queries: no augmentation, PLPD_i = 0 and F2 = F1 (the reference applies no second
       filter to text)
  w_i = entropy_weight exp(entropy_margin - H_i) + plpd_weight exp(PLPD_i)   (constants)
  L = mean_{i in F2} w_i H_i;   no optimiser step when F2 is empty (the reference's guard)

Images are NHWC; when H or W is not a multiple of the grid, the image is resized (bilinear) to
the nearest smaller multiple, shuffled, and resized back, as the reference does.

References:
  Lee et al., "Entropy is not enough for test-time adaptation: from the perspective of
  disentangled factors", ICLR 2024.
  Li et al., "Test-time adaptation for cross-modal retrieval with query shift", ICLR 2025
  (the TCR code, whose baseline constants rest_jax keeps; docs/method.md section 6).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rest_jax.config import AdaptConfig
from rest_jax.methods.base import InnerResult, Method, no_state
from rest_jax.methods.baseline_common import (
    count,
    forward,
    guarded_update,
    strictly_below_kth,
)
from rest_jax.numerics import entropy, masked_mean


class DeyoTerms(NamedTuple):
    """DeYO's loss and its filters.

    Attributes:
      loss: weighted mean entropy over F2.
      selected_entropy: (B,) bool, F1.
      selected: (B,) bool, F2.
      plpd: (B,) PLPD (zeros for text queries).
      weights: (B,) sample weights.
    """

    loss: jax.Array
    selected_entropy: jax.Array
    selected: jax.Array
    plpd: jax.Array
    weights: jax.Array


def plpd(logits: jax.Array, view_logits: jax.Array) -> jax.Array:
    """``p_i[y_i] - p'_i[y_i]`` with ``y_i = argmax p_i``; no gradient."""
    logits, view_logits = jax.lax.stop_gradient((logits, view_logits))
    labels = jnp.argmax(logits, axis=-1)[:, None]
    probs = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), labels, axis=-1)[:, 0]
    view_probs = jnp.take_along_axis(jax.nn.softmax(view_logits, axis=-1), labels, axis=-1)[:, 0]
    return probs - view_probs


def deyo_loss(
    logits: jax.Array,
    view_logits: jax.Array | None,
    valid: jax.Array,
    *,
    fraction: float = 0.5,
    entropy_margin: float = 0.4,
    plpd_threshold: float = 0.2,
    entropy_weight: float = 1.0,
    plpd_weight: float = 1.0,
) -> DeyoTerms:
    """DeYO's objective (module docstring).

    Args:
      logits: (B, N) baseline logits of the queries.
      view_logits: (B, N) logits of their shuffled views, or None for text queries (PLPD = 0,
        every F1 query passes the second filter).
      valid: (B,) bool.
      fraction, entropy_margin, plpd_threshold, entropy_weight, plpd_weight: see above.

    Returns:
      :class:`DeyoTerms`.
    """
    h = entropy(logits)
    first = strictly_below_kth(h, valid, fraction).selected
    if view_logits is None:
        divergence = jnp.zeros_like(h)
        selected = first
    else:
        divergence = plpd(logits, view_logits)
        selected = first & (divergence > plpd_threshold)
    weights = entropy_weight * jnp.exp(
        entropy_margin - jax.lax.stop_gradient(h)
    ) + plpd_weight * jnp.exp(divergence)
    return DeyoTerms(masked_mean(weights * h, selected), first, selected, divergence, weights)


def patch_permutations(key: jax.Array, batch_size: int, num_patches: int) -> jax.Array:
    """(B, P) random permutations: row i is the argsort of uniforms from ``fold_in(key, i)``.

    Row i does not depend on the batch size, so a padded batch shuffles its real rows as
    the unpadded batch would.
    """
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch_size))
    noise = jax.vmap(lambda k: jax.random.uniform(k, (num_patches,)))(keys)
    return jnp.argsort(noise, axis=-1)


def shuffle_patches(images: jax.Array, permutations: jax.Array, grid: int) -> jax.Array:
    """Cuts each NHWC image into grid x grid patches and reorders them.

    Patch ``j`` of the output (row-major over the grid) is patch ``permutations[b, j]`` of
    image ``b``. H and W must be multiples of ``grid``.
    """
    b, height, width, channels = images.shape
    ph, pw = height // grid, width // grid
    patches = images.reshape(b, grid, ph, grid, pw, channels).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, grid * grid, ph, pw, channels)
    patches = jnp.take_along_axis(patches, permutations[:, :, None, None, None], axis=1)
    patches = patches.reshape(b, grid, grid, ph, pw, channels).transpose(0, 1, 3, 2, 4, 5)
    return patches.reshape(b, height, width, channels)


def patch_shuffled_view(images: jax.Array, key: jax.Array, grid: int = 4) -> jax.Array:
    """DeYO's augmented view: every image's grid x grid patches in a random order."""
    if images.ndim != 4:
        raise ValueError(f"patch shuffling needs NHWC images, got shape {images.shape}")
    b, height, width, channels = images.shape
    fit_h, fit_w = (height // grid) * grid, (width // grid) * grid
    if fit_h == 0 or fit_w == 0:
        raise ValueError(f"images of size {height}x{width} are smaller than the {grid}x{grid} grid")
    permutations = patch_permutations(key, b, grid * grid)
    if (fit_h, fit_w) == (height, width):
        return shuffle_patches(images, permutations, grid)
    resized = jax.image.resize(images, (b, fit_h, fit_w, channels), "bilinear")
    shuffled = shuffle_patches(resized, permutations, grid)
    return jax.image.resize(shuffled, images.shape, "bilinear").astype(images.dtype)


def queries_are_images(config: AdaptConfig, inputs: Any) -> bool:
    """``config.deyo_image_queries``, or (None) whether ``inputs`` is one 4-D (NHWC) array."""
    is_4d = hasattr(inputs, "ndim") and inputs.ndim == 4
    if config.deyo_image_queries is None:
        return is_4d
    if config.deyo_image_queries and not is_4d:
        shape = getattr(inputs, "shape", type(inputs).__name__)
        raise ValueError(f"deyo_image_queries=True needs NHWC image inputs, got {shape}")
    return bool(config.deyo_image_queries)


def deyo_step(ctx, adapted, opt_state, method_state, step_index) -> InnerResult:
    """One DeYO step (module docstring); no optimiser step when F2 is empty."""
    cfg = ctx.config
    view_logits = None
    if queries_are_images(cfg, ctx.inputs):
        view = patch_shuffled_view(
            ctx.inputs, jax.random.fold_in(ctx.key, step_index), cfg.deyo_patch_grid
        )
        view_logits = jax.lax.stop_gradient(forward(ctx, adapted, view)[1])

    def loss_fn(params):
        queries, logits = forward(ctx, params)
        terms = deyo_loss(
            logits,
            view_logits,
            ctx.valid,
            fraction=cfg.deyo_fraction,
            entropy_margin=cfg.deyo_entropy_margin,
            plpd_threshold=cfg.deyo_plpd_threshold,
            entropy_weight=cfg.deyo_entropy_weight,
            plpd_weight=cfg.deyo_plpd_weight,
        )
        return terms.loss, (queries, terms)

    (loss, (queries, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(adapted)
    adapted, opt_state = guarded_update(ctx, adapted, opt_state, grads, jnp.any(terms.selected))
    metrics = {
        "loss": loss,
        "num_selected_entropy": count(terms.selected_entropy),
        "num_selected": count(terms.selected),
        "plpd": masked_mean(terms.plpd, terms.selected_entropy),
    }
    return InnerResult(adapted, opt_state, method_state, queries, metrics)


def deyo() -> Method:
    """DeYO as a stateless :class:`rest_jax.methods.base.Method` (randomness from ctx.key)."""
    return Method(no_state, deyo_step)
