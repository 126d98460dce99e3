"""Composed queries: a reference image and a modification text, one query embedding.

A composed query (composed image retrieval, docs/method.md) is encoded by the CLIP towers
as they serve the query, then composed:

  * zero-shot:  q = normalise(normalise(f_I(x)) + normalise(f_T(m)));
  * combiner (CLIP4Cir, Baldrati et al., CVPR-W 2022), with i = normalise(f_I(x)),
    t = normalise(f_T(m)):

        h    = LN([relu(W_i i) ; relu(W_t t)])            (LN: this module's one LayerNorm)
        lam  = sigmoid(w_g . relu(W_gh h))                 (a scalar gate per query)
        q    = lam * t + (1 - lam) * i + W_o relu(W_h h)   (the gated mix and a residual sum)

The LayerNorm after the concatenation is an addition to CLIP4Cir (which has dropout there):
it gives the combiner a LayerNorm that test-time adaptation can adapt like the towers'.

The encoder's parameters are ``{"vision", "text"}`` (the CLIP towers) plus ``"combiner"``;
its inputs are ``{"image": (B, S, S, 3) float, "text": (B, L) int32}``, the query id on the
leading axis. :data:`COMPOSED_ADAPT_RULES` adapt the query side's LayerNorms: both towers'
(the rules of ``CLIP_IMAGE_ADAPT_RULES`` and ``CLIP_TEXT_ADAPT_RULES``) and the combiner's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rest_jax.models.clip import ClipConfig, LayerNorm, image_encoder, text_encoder
from rest_jax.numerics import l2_normalize

PyTree = Any
Array = jax.Array

COMPOSITIONS = ("combiner", "zero-shot")

COMPOSED_ADAPT_RULES: tuple[tuple[str, bool], ...] = (
    (r"^vision/(ln_pre|ln_post|blocks_\d+/ln_[12])/(scale|bias)$", True),
    (r"^text/blocks_\d+/ln_[12]/(scale|bias)$", True),
    (r"^combiner/ln/(scale|bias)$", True),
)
"""The adapted set of a composed query: the image tower's LayerNorms, the text tower's block
LayerNorms (as for image-text queries) and the combiner's LayerNorm (absent in zero-shot)."""


@dataclasses.dataclass(frozen=True)
class CombinerConfig:
    """The combiner's shape.

    Attributes:
      dim: the CLIP embedding dimension (the towers' ``projection_dim``).
      hidden: width of the projections and of the gate's and the mix's hidden layers.
    """

    dim: int
    hidden: int = 256

    def __post_init__(self):
        if self.dim < 1 or self.hidden < 1:
            raise ValueError(f"dim and hidden must be >= 1, got {self.dim}, {self.hidden}")


class Combiner(nn.Module):
    """CLIP4Cir's combiner with a LayerNorm (module docstring): (i, t) -> q, unnormalised."""

    config: CombinerConfig

    @nn.compact
    def __call__(self, image: Array, text: Array) -> Array:
        """Args: image, text: (B, dim) L2-normalised features. Returns: (B, dim)."""
        if image.shape != text.shape or image.shape[-1] != self.config.dim:
            raise ValueError(
                f"image {image.shape} and text {text.shape} features must both be "
                f"(B, {self.config.dim})"
            )
        h = self.config.hidden
        projected = jnp.concatenate(
            [
                nn.relu(nn.Dense(h, name="image_proj")(image)),
                nn.relu(nn.Dense(h, name="text_proj")(text)),
            ],
            axis=-1,
        )
        projected = LayerNorm(name="ln")(projected)
        gate = nn.sigmoid(
            nn.Dense(1, name="gate_out")(nn.relu(nn.Dense(h, name="gate")(projected)))
        )
        mix = nn.Dense(self.config.dim, name="mix_out")(nn.relu(nn.Dense(h, name="mix")(projected)))
        return gate * text + (1.0 - gate) * image + mix


def init_combiner(config: CombinerConfig, seed: int = 0) -> PyTree:
    """Random combiner parameters for ``seed``."""
    x = jnp.zeros((1, config.dim), jnp.float32)
    return jax.jit(Combiner(config).init)(jax.random.PRNGKey(seed), x, x)["params"]


def zero_shot_composition(image: Array, text: Array) -> Array:
    """``normalise(i) + normalise(t)``: the zero-shot composition (unnormalised sum)."""
    return l2_normalize(image.astype(jnp.float32)) + l2_normalize(text.astype(jnp.float32))


def combine_features(combiner: CombinerConfig | None) -> Callable[[PyTree, Array, Array], Array]:
    """``fn(combiner_params, i, t) -> q`` for normalised tower features: the trained combiner,
    or the zero-shot sum when ``combiner`` is None (its parameters are then ignored)."""
    if combiner is None:
        return lambda params, i, t: zero_shot_composition(i, t)
    module = Combiner(combiner)
    return lambda params, i, t: module.apply({"params": params}, i, t)


def composed_encoder(
    clip_config: ClipConfig, combiner: CombinerConfig | None = None
) -> Callable[[PyTree, dict[str, Array]], Array]:
    """The composed query encoder: ``encoder(params, inputs) -> (B, dim)`` features.

    Args:
      clip_config: the CLIP towers' configuration.
      combiner: the combiner's configuration; None is the zero-shot composition (then
        ``params`` holds only ``"vision"`` and ``"text"``).

    Returns:
      ``encoder(params, {"image": pixels, "text": token ids})`` with ``params =
      {"vision", "text"[, "combiner"]}``; the features are unnormalised (callers normalise).
    """
    if combiner is not None and combiner.dim != clip_config.projection_dim:
        raise ValueError(
            f"the combiner's dim {combiner.dim} differs from the CLIP projection_dim "
            f"{clip_config.projection_dim}"
        )
    encode_image = image_encoder(clip_config)
    encode_text = text_encoder(clip_config)
    compose = combine_features(combiner)

    def encoder(params: PyTree, inputs: dict[str, Array]) -> Array:
        if not isinstance(inputs, dict) or set(inputs) != {"image", "text"}:
            raise ValueError("a composed query is a dict with 'image' and 'text' inputs")
        i = l2_normalize(encode_image(params["vision"], inputs["image"]).astype(jnp.float32))
        t = l2_normalize(encode_text(params["text"], inputs["text"]).astype(jnp.float32))
        return compose(params.get("combiner"), i, t)

    return encoder
