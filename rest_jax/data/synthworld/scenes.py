"""Scene sampling: named objects, distractors, backgrounds and their relations."""

from __future__ import annotations

import numpy as np

from rest_jax.data.synthworld.words import (
    _CONTAINER_SHAPES,
    BACKGROUND_KINDS,
    BACKGROUND_TONES,
    COLOUR_RGB,
    COLOURS,
    SHAPES,
)
from rest_jax.data.synthworld.world_config import WorldConfig


def grid_cells(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column (0, 1, 2) of positions in a 3x3 grid: floor(3 * coordinate)."""
    row = np.clip(np.floor(np.asarray(y) * 3.0), 0, 2).astype(np.int32)
    col = np.clip(np.floor(np.asarray(x) * 3.0), 0, 2).astype(np.int32)
    return row, col


def relation_table(scenes: dict[str, np.ndarray], config: WorldConfig) -> np.ndarray:
    """Truth of every relation between every ordered pair of slots.

    a "left of" b: x_a < x_b - margin; "right of", "above" (y_a < y_b - margin), "below"
    likewise; "next to": |c_a - c_b| < near_distance and neither encloses the other; "inside":
    a is nested in b; "around": b is nested in a. Relations of a slot with itself are false.

    Returns:
      bool [N, len(RELATIONS), M, M]: entry [n, r, a, b] says "a <r> b" in image n.
    """
    x, y = scenes["object_x"], scenes["object_y"]
    container = scenes["object_container"]
    m = x.shape[1]
    dx = x[:, :, None] - x[:, None, :]
    dy = y[:, :, None] - y[:, None, :]
    slots = np.arange(m)
    inside = container[:, :, None] == slots[None, None, :]
    around = np.swapaxes(inside, 1, 2)
    nested = inside | around
    margin = config.relation_margin
    table = np.stack(
        [
            dx < -margin,
            dx > margin,
            dy < -margin,
            dy > margin,
            (np.hypot(dx, dy) < config.near_distance) & ~nested,
            inside,
            around,
        ],
        axis=1,
    )
    valid = scenes["object_valid"]
    pair_valid = valid[:, :, None] & valid[:, None, :] & (slots[:, None] != slots[None, :])
    return table & pair_valid[:, None]


def _conflicts(x, y, radius, valid, container) -> np.ndarray:
    """bool [N, M]: slot j overlaps an earlier valid slot (nested pairs excepted)."""
    m = x.shape[1]
    dist = np.hypot(x[:, :, None] - x[:, None, :], y[:, :, None] - y[:, None, :])
    limit = (radius[:, :, None] + radius[:, None, :]) * 1.05 + 0.02
    slots = np.arange(m)
    earlier = slots[:, None] < slots[None, :]  # [i, j]: i drawn before j
    nested = (container[:, :, None] == slots[None, None, :]) | (
        container[:, None, :] == slots[None, :, None]
    )
    clash = (dist < limit) & earlier[None] & valid[:, :, None] & valid[:, None, :] & ~nested
    return clash.any(axis=1)


def _place(rng, radius, size, valid, container, named, object_radius, attempts=32):
    """Places objects slot by slot, each clear of the slots placed before it.

    For each slot, ``attempts`` candidate centres are drawn per image and the first that clears
    every earlier object (distance >= 1.05 (r_i + r_j) + 0.02) is kept. A named object that
    finds no room shrinks one size class and tries again; an object that still finds none is
    dropped. Nested children sit at their container's centre.

    Returns:
      x, y float32 [n, M]; and the updated radius, size, valid.
    """
    n, m = radius.shape
    radius, size, valid = radius.copy(), size.copy(), valid.copy()
    x, y = np.zeros((n, m)), np.zeros((n, m))
    placed = np.zeros((n, m), bool)
    object_radius = np.asarray(object_radius)
    for j in range(m):
        child = container[:, j] >= 0
        rows = np.nonzero(valid[:, j] & child)[0]
        x[rows, j] = x[rows, container[rows, j]]
        y[rows, j] = y[rows, container[rows, j]]
        placed[rows, j] = True
        todo = valid[:, j] & ~child
        for shrink in range(3):
            rows = np.nonzero(todo)[0]
            if not len(rows):
                break
            r = radius[rows, j][:, None]
            lo, hi = r + 0.02, 1.0 - r - 0.02
            cx = lo + (hi - lo) * rng.random((len(rows), attempts))
            cy = lo + (hi - lo) * rng.random((len(rows), attempts))
            dist = np.hypot(cx[:, :, None] - x[rows, None, :j], cy[:, :, None] - y[rows, None, :j])
            limit = (r[:, :, None] + radius[rows, None, :j]) * 1.05 + 0.02
            clear = ~((dist < limit) & placed[rows, None, :j]).any(axis=-1)
            found = clear.any(axis=1)
            pick = np.argmax(clear, axis=1)
            hit = rows[found]
            x[hit, j] = cx[found, pick[found]]
            y[hit, j] = cy[found, pick[found]]
            placed[hit, j] = True
            todo[hit] = False
            smaller = rows[~found & named[rows, j] & (size[rows, j] > 0)]
            if shrink < 2 and len(smaller):
                ratio = object_radius[size[smaller, j] - 1] / object_radius[size[smaller, j]]
                radius[smaller, j] *= ratio
                size[smaller, j] -= 1
        valid[todo, j] = False
    return x.astype(np.float32), y.astype(np.float32), radius, size, valid


def sample_scenes(config: WorldConfig, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draws n scenes (object and background attributes; no pixels).

    Returns:
      dict with ``object_*`` arrays [n, M] (valid, mentionable, shape, colour, size, x, y, radius,
      angle, container: slot index of the enclosing object or -1), ``object_rgb`` [n, M, 3],
      ``n_objects`` [n], and ``background_*`` arrays (kind, tone, rgb [n, 3], angle, period) plus
      ``noise_seed`` [n] (uint32, seeds the texture and sensor noise of that image).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    k, d = config.max_objects, config.max_distractors
    m = k + d
    shape_ids = np.array([SHAPES.index(s) for s in config.shapes])
    colour_ids = np.array([COLOURS.index(c) for c in config.colours])

    n_named = rng.integers(config.min_objects, k + 1, n)
    n_distractors = rng.integers(0, d + 1, n)
    slots = np.arange(m)
    named = slots[None, :] < k
    valid = np.where(
        named, slots[None] < n_named[:, None], slots[None] - k < n_distractors[:, None]
    )
    shape = shape_ids[rng.integers(0, len(shape_ids), (n, m))]
    colour = colour_ids[rng.integers(0, len(colour_ids), (n, m))]
    size = np.where(named, rng.integers(0, 3, (n, m)), 0)
    base_radius = np.where(named, np.asarray(config.object_radius)[size], config.distractor_radius)
    container = np.full((n, m), -1, np.int32)

    containers = np.array([SHAPES.index(s) for s in _CONTAINER_SHAPES if s in config.shapes])
    if len(containers) and k >= 2:
        nest = (n_named >= 2) & (rng.random(n) < config.p_inside)
        idx = np.nonzero(nest)[0]
        shape[idx, 0] = containers[rng.integers(0, len(containers), len(idx))]
        size[idx, 0], size[idx, 1] = 2, 0
        base_radius[idx, 0] = config.object_radius[2] * 1.15
        base_radius[idx, 1] = config.object_radius[0]
        # The child's colour differs from its container's so that it stays visible.
        pos = np.searchsorted(colour_ids, colour[idx, 0])
        shift = rng.integers(1, len(colour_ids), len(idx))
        colour[idx, 1] = colour_ids[(pos + shift) % len(colour_ids)]
        container[idx, 1] = 0

    radius = base_radius * (1.0 + config.radius_jitter * rng.uniform(-1, 1, (n, m)))
    x, y, radius, size, valid = _place(
        rng, radius, size, valid, container, named & valid, config.object_radius
    )
    angle = np.deg2rad(config.max_rotation_deg) * rng.uniform(-1, 1, (n, m))
    brightness = 1.0 + config.colour_jitter * rng.uniform(-1, 1, (n, m, 1))
    tint = 0.5 * config.colour_jitter * rng.uniform(-1, 1, (n, m, 3))
    rgb = np.clip(COLOUR_RGB[colour] * brightness + tint, 0.0, 1.0)

    tone = rng.integers(0, len(BACKGROUND_TONES), n)
    level = np.where(tone == 0, rng.uniform(0.72, 0.9, n), rng.uniform(0.1, 0.28, n))
    bg_rgb = np.clip(level[:, None] + rng.uniform(-0.06, 0.06, (n, 3)), 0.0, 1.0)
    return {
        "n_objects": valid.sum(axis=1).astype(np.int32),
        "object_valid": valid,
        "object_mentionable": valid & named,
        "object_shape": shape.astype(np.int32),
        "object_colour": colour.astype(np.int32),
        "object_size": size.astype(np.int32),
        "object_x": x,
        "object_y": y,
        "object_radius": radius.astype(np.float32),
        "object_angle": angle.astype(np.float32),
        "object_rgb": rgb.astype(np.float32),
        "object_container": container,
        "background_kind": rng.integers(0, len(BACKGROUND_KINDS), n).astype(np.int32),
        "background_tone": tone.astype(np.int32),
        "background_rgb": bg_rgb.astype(np.float32),
        "background_angle": (rng.integers(0, 4, n) * (np.pi / 4)).astype(np.float32),
        "background_period": rng.uniform(0.15, 0.3, n).astype(np.float32),
        "noise_seed": rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32),
    }


SCENE_KEYS = (
    "n_objects",
    "object_valid",
    "object_mentionable",
    "object_shape",
    "object_colour",
    "object_size",
    "object_x",
    "object_y",
    "object_radius",
    "object_angle",
    "object_rgb",
    "object_container",
    "background_kind",
    "background_tone",
    "background_rgb",
    "background_angle",
    "background_period",
    "noise_seed",
)
