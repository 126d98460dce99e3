"""AVWorld: a procedurally generated audio-visual world for video <-> audio retrieval.

docs/method.md section 8.5 (video-audio retrieval). Each clip is 1 s: T = 8 frames of 32 x 32 px
and a 16 kHz waveform. A clip has a background kind (a visual texture, heard as its own
ambient noise band) and 1 to 3 objects of distinct kinds. Each kind has a shape and a hue
family (seen) and a pitch and timbre (heard); an object's size sets its radius and loudness,
its speed its motion and tremolo rate, and, the strongest synchronisation cue, it is visible
exactly in its frames ``[onset, offset)`` and audible exactly then. The background's tint,
the shade within a kind's hue family, positions and directions are visual-only distractors;
pitch jitter and phases are audio-only nuisances.

Clip ``i``'s video pairs with clip ``i``'s sound. Clips whose audible signatures (background
kind and each object's kind, size, speed, onset, offset) coincide cannot be told apart:
``recall_ceiling`` measures the R@1 this leaves.

Modules: ``config`` (the knobs, the kind tables, per-split random streams), ``scenes``
(attributes, signatures, the ceiling), ``render_video``, ``render_audio``, ``splits``
(:func:`generate_av_split`, :class:`AVSplit`).
"""

from __future__ import annotations

from rest_jax.data.avworld.config import (
    AV_SPLITS,
    BACKGROUND_BANDS_HZ,
    BACKGROUND_KINDS,
    OBJECT_HARMONICS,
    OBJECT_HUES,
    OBJECT_PITCH_HZ,
    OBJECT_SHAPES,
    AVWorldConfig,
    split_rng,
)
from rest_jax.data.avworld.render_audio import ambient, gate, render_waveforms
from rest_jax.data.avworld.render_video import positions, render_videos, shape_mask
from rest_jax.data.avworld.scenes import (
    SCENE_KEYS,
    audible_signatures,
    hsv_to_rgb,
    recall_ceiling,
    sample_scenes,
)
from rest_jax.data.avworld.splits import AVSplit, generate_av_split

__all__ = [
    "AV_SPLITS",
    "AVSplit",
    "AVWorldConfig",
    "BACKGROUND_BANDS_HZ",
    "BACKGROUND_KINDS",
    "OBJECT_HARMONICS",
    "OBJECT_HUES",
    "OBJECT_PITCH_HZ",
    "OBJECT_SHAPES",
    "SCENE_KEYS",
    "ambient",
    "audible_signatures",
    "gate",
    "hsv_to_rgb",
    "generate_av_split",
    "positions",
    "recall_ceiling",
    "render_videos",
    "render_waveforms",
    "sample_scenes",
    "shape_mask",
    "split_rng",
]
