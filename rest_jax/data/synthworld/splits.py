"""A split of the world: scenes, images and captions together."""

from __future__ import annotations

from typing import Any

import numpy as np

from rest_jax.data.synthworld.captions import generate_captions
from rest_jax.data.synthworld.render import render_scenes
from rest_jax.data.synthworld.scenes import sample_scenes
from rest_jax.data.synthworld.world_config import WorldConfig, split_rng


def generate_split(config: WorldConfig, split: str, seed: int = 0) -> dict[str, Any]:
    """Generates one split of the world (deterministic in (config, split, seed)).

    Args:
      config: the world's knobs.
      split: "train", "validation" or "test" (sizes from config).
      seed: base seed; each split uses SeedSequence([seed, split key]).

    Returns:
      dict with ``images`` uint8 [N, S, S, 3], ``image_ids`` int32 [N] (0..N-1), ``captions``
      list[str] of length 5N (image-major), ``caption_image_ids`` int32 [5N], the scene arrays
      of ``sample_scenes`` (SCENE_KEYS) and the caption meaning arrays of
      ``generate_captions`` (CAPTION_KEYS).
    """
    n = config.split_size(split)
    rng = split_rng(seed, split)
    scenes = sample_scenes(config, n, rng)
    captions = generate_captions(scenes, config, rng)
    images = render_scenes(scenes, config)
    return {
        "images": images,
        "image_ids": np.arange(n, dtype=np.int32),
        **captions,
        **scenes,
    }
