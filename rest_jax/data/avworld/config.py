"""The audio-visual world's knobs (:class:`AVWorldConfig`) and its per-split random streams."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

AV_SPLITS = ("train", "val", "test")
_SPLIT_KEYS = {"train": 0, "val": 1, "test": 2}
# Streams of this world never coincide with SynthWorld's (SeedSequence([seed, split])).
_WORLD_KEY = 0xA7

# Object kinds: each has a shape (seen) and a timbre + pitch (heard).
OBJECT_SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
# Fundamental frequency (Hz) of each kind: well apart on the mel scale.
OBJECT_PITCH_HZ = (220.0, 330.0, 494.0, 740.0, 1109.0, 1661.0)
# Relative amplitude of harmonics 1..6 of each kind (its timbre).
OBJECT_HARMONICS = (
    (1.0, 0.0, 0.0, 0.0, 0.0, 0.0),  # pure
    (1.0, 0.0, 0.33, 0.0, 0.2, 0.0),  # odd (square-like)
    (1.0, 0.5, 0.33, 0.25, 0.2, 0.17),  # all (saw-like)
    (0.3, 1.0, 0.0, 0.6, 0.0, 0.3),  # even-heavy
    (1.0, 0.0, 0.0, 0.8, 0.0, 0.0),  # fundamental + 4th
    (0.6, 0.6, 0.6, 0.0, 0.0, 0.0),  # low cluster
)
# Hue (degrees) of each kind's colour family: a second visual cue to the kind, besides shape.
OBJECT_HUES = (0.0, 60.0, 120.0, 180.0, 240.0, 300.0)
# Background kinds: a texture (seen) and an ambient noise band (heard).
BACKGROUND_KINDS = ("plain", "stripes", "checker", "speckle")
BACKGROUND_BANDS_HZ = ((40.0, 300.0), (300.0, 1200.0), (2000.0, 4000.0), (4500.0, 7800.0))


@dataclasses.dataclass(frozen=True)
class AVWorldConfig:
    """Knobs of the audio-visual world (defaults are the benchmark's).

    Attributes:
      frames: video frames T per clip (8, spanning the clip's 1 s).
      image_size: side of the square frames in pixels (32).
      sample_rate: audio samples per second (16,000).
      seconds: clip length (1.0 s), so ``S = sample_rate * seconds`` samples.
      n_train, n_val, n_test: clips per split (10,000 / 500 / 1,000).
      min_objects, max_objects: sounding objects per clip (1 to 3).
      min_duration: an object is visible and audible for at least this many frames (2).
      object_radius: radius of small / medium / large objects, fraction of the side.
      loudness: peak amplitude of small / medium / large objects (size sets loudness).
      speeds: motion speed levels in pixels per frame (0, slow, fast).
      tremolo_hz: amplitude-modulation rate of each speed level (motion sets modulation).
      tremolo_depth: depth of that modulation (0.6).
      pitch_jitter: relative uniform jitter of each object's pitch (0.02).
      hue_jitter_deg: an object's hue is its kind's (OBJECT_HUES) +- this (12 degrees);
        saturation and brightness vary freely (visual-only), and the background's tint is a
        pale colour of any hue (a visual-only distractor).
      ambient_level: RMS of the background's ambient noise (0.05).
      pixel_noise: std of the sensor noise, fraction of full scale (0.02).
      audio_noise: std of white noise added to every waveform (0.003).
      ramp_ms: linear fade in and out of each sound at its onset and offset (5 ms).
    """

    frames: int = 8
    image_size: int = 32
    sample_rate: int = 16_000
    seconds: float = 1.0
    n_train: int = 10_000
    n_val: int = 500
    n_test: int = 1_000
    min_objects: int = 1
    max_objects: int = 3
    min_duration: int = 2
    object_radius: tuple[float, float, float] = (0.16, 0.21, 0.27)
    loudness: tuple[float, float, float] = (0.12, 0.2, 0.3)
    speeds: tuple[float, float, float] = (0.0, 1.0, 2.5)
    tremolo_hz: tuple[float, float, float] = (0.0, 4.0, 12.0)
    tremolo_depth: float = 0.6
    pitch_jitter: float = 0.02
    hue_jitter_deg: float = 12.0
    ambient_level: float = 0.05
    pixel_noise: float = 0.02
    audio_noise: float = 0.003
    ramp_ms: float = 5.0

    def __post_init__(self):
        if self.frames < 2 or self.image_size < 8:
            raise ValueError(f"need frames >= 2 and image_size >= 8, got {self}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self}")
        if not 1 <= self.min_duration <= self.frames:
            raise ValueError(f"min_duration must be in [1, frames], got {self.min_duration}")
        for name in ("object_radius", "loudness", "speeds", "tremolo_hz"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} needs 3 entries (small/medium/large or speed levels)")
        if self.num_samples < 1:
            raise ValueError("sample_rate * seconds must be >= 1")

    @property
    def num_samples(self) -> int:
        """Samples per clip ``S``."""
        return int(round(self.sample_rate * self.seconds))

    def split_size(self, split: str) -> int:
        """Default number of clips of a split."""
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[check_split(split)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AVWorldConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown AVWorldConfig keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def check_split(split: str) -> str:
    if split not in _SPLIT_KEYS:
        raise ValueError(f"unknown split {split!r}; expected one of {AV_SPLITS}")
    return split


def split_rng(seed: int, split: str) -> np.random.Generator:
    """Independent generator per (seed, split): ``SeedSequence([world key, seed, split key])``."""
    check_split(split)
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(
        np.random.SeedSequence([_WORLD_KEY, int(seed), _SPLIT_KEYS[split]])
    )
