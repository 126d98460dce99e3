"""Training-time augmentation of the world's source model: varied, mildly degraded inputs.

CLIP's pre-training data is full of imperfect photos and typo-ridden text, and its features
degrade gracefully under corruption. These augmentations give the world's source model a
milder version of that experience. They are generic and deliberately unlike the evaluation
shifts (``rest_jax.data.image_corruptions`` / ``text_corruptions``): photometric jitter, light
sensor noise and light blur for images; uniform random one-character edits for captions
(not keyboard neighbours, OCR confusions or synonyms), so every subword piece of the
tokenizer is trained without the test corruptions being seen.

Every function takes a ``np.random.Generator`` and is deterministic for its state.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Strength of the training augmentations (0 switches a part off).

    Attributes:
      p_image: probability that an image is augmented at all.
      brightness: brightness offset drawn from U(-b, b), fraction of full scale.
      contrast: contrast factor drawn from U(1 - c, 1 + c) around the image mean.
      noise_std: Gaussian sensor noise with std U(0, s), fraction of full scale.
      blur_sigma: Gaussian blur with sigma U(0, s) pixels (applied with probability 1/2).
      typo_rate: probability that a caption word gets one random character edit.
    """

    p_image: float = 0.5
    brightness: float = 0.15
    contrast: float = 0.3
    noise_std: float = 0.06
    blur_sigma: float = 0.8
    typo_rate: float = 0.05


def augment_images(images: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Randomly jittered, noised and blurred copies of uint8 NHWC ``images``.

    Per augmented image: ``x <- (x - mean) * c + mean + b``, then ``x <- blur_sigma(x)`` with
    probability 1/2, then ``x <- x + n``, ``n ~ N(0, s^2)``; clipped to [0, 1] and rounded.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 NHWC images, got {images.dtype} {images.shape}")
    n = len(images)
    x = images.astype(np.float32) / 255.0
    chosen = rng.random(n) < cfg.p_image
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    c = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast, (n, 1, 1, 1))
    b = rng.uniform(-cfg.brightness, cfg.brightness, (n, 1, 1, 1))
    y = (x - mean) * c + mean + b
    sigma = rng.uniform(0.0, cfg.blur_sigma, n) * (rng.random(n) < 0.5)
    y = _blur_each(y, sigma)
    std = rng.uniform(0.0, cfg.noise_std, (n, 1, 1, 1))
    y = y + std * rng.standard_normal(y.shape, dtype=np.float32)
    y = np.where(chosen[:, None, None, None], y, x)
    return np.round(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)


def _blur_each(x: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur of each image with its own sigma (0 = unchanged)."""
    radius = 2
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    safe = np.maximum(sigma, 1e-3)[:, None]
    kernel = np.exp(-0.5 * (taps[None] / safe) ** 2)
    kernel = np.where((sigma > 0)[:, None], kernel, (taps[None] == 0).astype(np.float32))
    kernel = (kernel / kernel.sum(axis=1, keepdims=True)).astype(np.float32)
    for axis in (1, 2):
        padded = np.pad(
            x,
            [(0, 0)] + [(radius, radius) if a == axis else (0, 0) for a in (1, 2)] + [(0, 0)],
            mode="edge",
        )
        size = x.shape[axis]
        out = np.zeros_like(x)
        for k in range(2 * radius + 1):
            window = np.take(padded, np.arange(k, k + size), axis=axis)
            out += kernel[:, k, None, None, None] * window
        x = out
    return x


_LETTERS = string.ascii_lowercase


def augment_captions(
    captions: Sequence[str], cfg: AugmentConfig, rng: np.random.Generator
) -> list[str]:
    """Captions whose words each get, with probability ``typo_rate``, one uniform random edit:
    delete, insert, substitute (a random letter) or swap two neighbouring characters."""
    out = []
    for caption in captions:
        words = caption.split()
        hits = rng.random(len(words)) < cfg.typo_rate
        for i in np.flatnonzero(hits):
            words[i] = _random_edit(words[i], rng)
        out.append(" ".join(words))
    return out


def _random_edit(word: str, rng: np.random.Generator) -> str:
    if len(word) < 2:
        return word
    kind = int(rng.integers(4))
    pos = int(rng.integers(len(word)))
    letter = _LETTERS[int(rng.integers(len(_LETTERS)))]
    if kind == 0:
        return word[:pos] + word[pos + 1 :]
    if kind == 1:
        return word[:pos] + letter + word[pos:]
    if kind == 2:
        return word[:pos] + letter + word[pos + 1 :]
    pos = min(pos, len(word) - 2)
    return word[:pos] + word[pos + 1] + word[pos] + word[pos + 2 :]
