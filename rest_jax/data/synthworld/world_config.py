"""SynthWorld's knobs (:class:`WorldConfig`) and the per-split random streams."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from rest_jax.data.synthworld.words import (
    _SPLIT_KEYS,
    CAPTION_TYPES,
    COLOURS,
    COUNT_WORDS,
    SHAPES,
    SPLITS,
)


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Difficulty knobs of the synthetic world (defaults are the benchmark's).

    Attributes:
      image_size: side of the square RGB images in pixels (32; 64 also works).
      n_train, n_validation, n_test: images per split (10,000 / 1,000 / 1,000; the test split is
        shaped like Flickr30k's 1k test: 1000 images, 5000 captions).
      captions_per_image: captions per image (5, as COCO and Flickr).
      shapes, colours: the shape and colour names in use (subsets of SHAPES and COLOURS make an
        easier world).
      min_objects, max_objects: range of named objects per image (2 to 3).
      max_distractors: tiny unnamed shapes per image, uniform in 0..max_distractors (1). Captions
        never name them, but counts include them.
      object_radius: radius of small / medium / large objects, fraction of the image side
        (0.12, 0.17, 0.23: a small object is about 8 px wide in a 32 px image).
      distractor_radius: radius of distractors, fraction of the image side.
      radius_jitter: relative uniform jitter of every radius (0.1 = +-10%).
      max_rotation_deg: objects are rotated uniformly in +-max_rotation_deg (15).
      colour_jitter: relative brightness jitter of object colours; each channel also moves by up
        to half of it (0.12).
      p_inside: probability that an image with >= 2 named objects nests a small object inside a
        large circle, square or ring (0.15).
      background_contrast: amplitude of the background pattern, fraction of full scale (0.12).
      pixel_noise: standard deviation of the sensor noise, fraction of full scale (0.02).
      caption_type_weights: relative weights of the caption types single / relation / list /
        count (0.1, 0.35, 0.45, 0.1). Single-object captions are the most ambiguous.
      p_mention_size: probability that a noun phrase names the size (0.8).
      p_omit_colour: probability that a noun phrase leaves the colour out (0).
      p_generic_noun: probability that a coloured noun phrase says "shape"/"object" instead of
        the shape name (0).
      p_mention_position: probability that a noun phrase of a single, list or count caption
        gives the object's grid position (1).
      p_mention_background: probability that a caption describes the background (0.8).

    The defaults are tuned so that a source model trained for ~2 CPU minutes
    (``experiments.training.SourceModelConfig``) retrieves well on clean data and loses much of it
    under severe corruptions; the ambiguity knobs (``p_omit_colour``, ``p_generic_noun``,
    smaller objects, more distractors) make harder worlds.
      p_synonym: probability of a synonym instead of the canonical word (0.3).
      relation_margin: "left of" etc. need a centre offset of at least this (0.1).
      near_distance: "next to" needs centres closer than this (0.4).
    """

    image_size: int = 32
    n_train: int = 10_000
    n_validation: int = 1_000
    n_test: int = 1_000
    captions_per_image: int = 5
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = COLOURS
    min_objects: int = 2
    max_objects: int = 3
    max_distractors: int = 1
    object_radius: tuple[float, float, float] = (0.12, 0.17, 0.23)
    distractor_radius: float = 0.065
    radius_jitter: float = 0.1
    max_rotation_deg: float = 15.0
    colour_jitter: float = 0.12
    p_inside: float = 0.15
    background_contrast: float = 0.12
    pixel_noise: float = 0.02
    caption_type_weights: tuple[float, float, float, float] = (0.1, 0.35, 0.45, 0.1)
    p_mention_size: float = 0.8
    p_omit_colour: float = 0.0
    p_generic_noun: float = 0.0
    p_mention_position: float = 1.0
    p_mention_background: float = 0.8
    p_synonym: float = 0.3
    relation_margin: float = 0.1
    near_distance: float = 0.4

    def __post_init__(self):
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        for name in ("n_train", "n_validation", "n_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.captions_per_image < 1:
            raise ValueError(f"captions_per_image must be >= 1, got {self.captions_per_image}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if self.max_distractors < 0:
            raise ValueError(f"max_distractors must be >= 0, got {self.max_distractors}")
        if self.max_objects + self.max_distractors >= len(COUNT_WORDS):
            raise ValueError(
                f"max_objects + max_distractors must be < {len(COUNT_WORDS)} (count words)"
            )
        unknown = set(self.shapes) - set(SHAPES)
        if unknown or not self.shapes:
            raise ValueError(f"shapes must be a non-empty subset of {SHAPES}, got {self.shapes}")
        unknown = set(self.colours) - set(COLOURS)
        if unknown or len(self.colours) < 2:
            raise ValueError(f"colours must be a subset of {COLOURS} with >= 2 names")
        if len(self.object_radius) != 3:
            raise ValueError("object_radius needs 3 entries (small, medium, large)")
        if len(self.caption_type_weights) != len(CAPTION_TYPES):
            raise ValueError(f"caption_type_weights needs {len(CAPTION_TYPES)} entries")
        for name in (
            "p_inside",
            "p_mention_size",
            "p_omit_colour",
            "p_generic_noun",
            "p_mention_position",
            "p_mention_background",
            "p_synonym",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    @property
    def max_slots(self) -> int:
        """Object slots per image: named objects then distractors."""
        return self.max_objects + self.max_distractors

    def split_size(self, split: str) -> int:
        """Number of images of a split."""
        return {"train": self.n_train, "validation": self.n_validation, "test": self.n_test}[
            _check_split(split)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return split


def split_rng(seed: int, split: str) -> np.random.Generator:
    """Independent generator per (seed, split): SeedSequence([seed, split key])."""
    if split not in _SPLIT_KEYS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(_SPLIT_KEYS)}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_KEYS[split]]))
