"""Scene attributes of the audio-visual world: what each clip contains, before rendering."""

from __future__ import annotations

import numpy as np

from rest_jax.data.avworld.config import (
    BACKGROUND_KINDS,
    OBJECT_HUES,
    OBJECT_SHAPES,
    AVWorldConfig,
)

# Arrays of a scene batch (N clips, M = max_objects slots); invalid slots hold zeros.
SCENE_KEYS = (
    "background",  # int32 (N,): index into BACKGROUND_KINDS (texture <-> ambient band)
    "background_rgb",  # float32 (N, 3): tint in [0, 1] (seen only: a visual distractor)
    "background_phase",  # float32 (N, 2): stripe/checker/speckle offsets (seen only)
    "valid",  # bool (N, M): slot holds an object
    "kind",  # int32 (N, M): index into OBJECT_SHAPES (shape <-> timbre and pitch)
    "size",  # int32 (N, M): 0 small, 1 medium, 2 large (radius <-> loudness)
    "speed",  # int32 (N, M): 0 still, 1 slow, 2 fast (motion <-> tremolo rate)
    "onset",  # int32 (N, M): first frame the object is seen and heard
    "offset",  # int32 (N, M): frame after the last (exclusive)
    "colour",  # float32 (N, M, 3): object colour, its kind's hue family (seen only)
    "start",  # float32 (N, M, 2): (x, y) centre at frame 0, fraction of the side
    "direction",  # float32 (N, M): direction of motion in radians (seen only)
    "pitch_factor",  # float32 (N, M): 1 + pitch jitter (heard only)
    "tremolo_phase",  # float32 (N, M): phase of the modulation (heard only)
)


def hsv_to_rgb(hue: np.ndarray, sat: np.ndarray, val: np.ndarray) -> np.ndarray:
    """float32 RGB ``(..., 3)`` in [0, 1] of hue (degrees), saturation and value in [0, 1]:
    ``c_j = v (1 - s clip(min(k_j, 4 - k_j), 0, 1))``, ``k_j = (h / 60 + (5, 3, 1)_j) mod 6``."""
    k = np.mod(np.asarray(hue)[..., None] / 60.0 + np.array([5.0, 3.0, 1.0]), 6.0)
    weight = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return (val[..., None] * (1.0 - sat[..., None] * weight)).astype(np.float32)


def sample_scenes(world: AVWorldConfig, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draws ``n`` scenes: a background, then ``min..max_objects`` objects of distinct kinds,
    each with a size, a speed, a colour, a start and a direction, and an interval
    ``[onset, offset)`` of at least ``min_duration`` frames within ``0..frames``.

    Args:
      world: the world's knobs.
      n: number of clips.
      rng: the split's generator (advanced).

    Returns:
      dict of SCENE_KEYS arrays.
    """
    m, t = world.max_objects, world.frames
    count = rng.integers(world.min_objects, m + 1, n)
    valid = np.arange(m)[None, :] < count[:, None]
    # Distinct kinds per clip: the first m of a random permutation of the kinds.
    kind = np.argsort(rng.random((n, len(OBJECT_SHAPES))), axis=1)[:, :m].astype(np.int32)
    size = rng.integers(0, 3, (n, m)).astype(np.int32)
    speed = rng.integers(0, 3, (n, m)).astype(np.int32)
    # Interval: duration d in [min_duration, T], onset uniform in [0, T - d].
    duration = rng.integers(world.min_duration, t + 1, (n, m))
    onset = (rng.random((n, m)) * (t - duration + 1)).astype(np.int32)
    offset = (onset + duration).astype(np.int32)
    hue = np.asarray(OBJECT_HUES)[kind] + rng.uniform(-1, 1, (n, m)) * world.hue_jitter_deg
    colour = hsv_to_rgb(hue, rng.uniform(0.6, 1.0, (n, m)), rng.uniform(0.65, 1.0, (n, m)))
    start = rng.uniform(0.25, 0.75, (n, m, 2)).astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi, (n, m)).astype(np.float32)
    pitch = 1.0 + rng.uniform(-world.pitch_jitter, world.pitch_jitter, (n, m))
    tremolo_phase = rng.uniform(0, 2 * np.pi, (n, m)).astype(np.float32)
    background = rng.integers(0, len(BACKGROUND_KINDS), n).astype(np.int32)
    background_rgb = hsv_to_rgb(
        rng.uniform(0, 360, n), rng.uniform(0.0, 0.35, n), rng.uniform(0.2, 0.55, n)
    )
    background_phase = rng.uniform(0, 1, (n, 2)).astype(np.float32)
    out = {
        "background": background,
        "background_rgb": background_rgb,
        "background_phase": background_phase,
        "valid": valid,
        "kind": kind,
        "size": size,
        "speed": speed,
        "onset": onset,
        "offset": offset,
        "colour": colour,
        "start": start,
        "direction": direction,
        "pitch_factor": pitch.astype(np.float32),
        "tremolo_phase": tremolo_phase,
    }
    for key in ("kind", "size", "speed", "onset", "offset", "pitch_factor", "tremolo_phase"):
        out[key] = np.where(valid, out[key], 0).astype(out[key].dtype)
    return out


def audible_signatures(scenes: dict[str, np.ndarray]) -> list[tuple]:
    """What each clip's sound determines: the background kind and the set of objects'
    (kind, size, speed, onset, offset). Two clips with equal signatures sound alike up to
    noise, pitch jitter and modulation phase, so no model can tell them apart."""
    sigs = []
    for i in range(len(scenes["background"])):
        objects = sorted(
            (int(k), int(s), int(v), int(a), int(b))
            for k, s, v, a, b, ok in zip(
                scenes["kind"][i],
                scenes["size"][i],
                scenes["speed"][i],
                scenes["onset"][i],
                scenes["offset"][i],
                scenes["valid"][i],
                strict=True,
            )
            if ok
        )
        sigs.append((int(scenes["background"][i]), tuple(objects)))
    return sigs


def recall_ceiling(scenes: dict[str, np.ndarray]) -> dict[str, float]:
    """Best expected R@1 (percent) of any model on a split with one relevant item per query.

    A query whose signature (:func:`audible_signatures`) is shared by ``c`` gallery items
    (itself included) is retrieved first with probability at most ``1/c``; the ceiling is
    ``100 * mean_i 1 / c_i``, the same in both directions (the video's extra content, colour
    and position, is not in the sound).
    """
    sigs = audible_signatures(scenes)
    counts: dict[tuple, int] = {}
    for s in sigs:
        counts[s] = counts.get(s, 0) + 1
    value = 100.0 * float(np.mean([1.0 / counts[s] for s in sigs])) if sigs else 0.0
    return {"v2a": value, "a2v": value}
