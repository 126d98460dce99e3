"""Rendering of the world's videos: textured background, moving shapes shown in their interval."""

from __future__ import annotations

import numpy as np

from rest_jax.data.avworld.config import AVWorldConfig


def shape_mask(kind: np.ndarray, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Whether offset ``(dx, dy)`` from a centre lies inside a shape of radius ``r``.

    Kinds (OBJECT_SHAPES): 0 circle ``|d| < r``; 1 square ``max(|dx|, |dy|) < 0.8 r``;
    2 triangle (apex up) ``-r < dy < 0.7 r, |dx| < 0.6 (dy + r)``; 3 cross (bars of half-width
    0.3 r); 4 ring ``0.5 r < |d| < r``; 5 diamond ``|dx| + |dy| < r``. All arrays broadcast.
    """
    ax, ay = np.abs(dx), np.abs(dy)
    d = np.sqrt(dx * dx + dy * dy)
    masks = (
        d < r,
        np.maximum(ax, ay) < 0.8 * r,
        (dy > -r) & (dy < 0.7 * r) & (ax < 0.6 * (dy + r)),
        (np.maximum(ax, ay) < r) & (np.minimum(ax, ay) < 0.3 * r),
        (d < r) & (d > 0.5 * r),
        ax + ay < r,
    )
    out = np.zeros(np.broadcast(kind, dx, dy, r).shape, bool)
    for k, mask in enumerate(masks):
        out |= (kind == k) & mask
    return out


def positions(world: AVWorldConfig, scenes: dict[str, np.ndarray]) -> np.ndarray:
    """Centres ``(N, M, T, 2)`` in pixels: ``p(t) = p0 + t v`` reflected into the frame so the
    object stays inside (a triangle wave of period ``2 (S - 2 r)``)."""
    side = world.image_size
    speed = np.asarray(world.speeds, np.float32)[scenes["speed"]]
    radius = np.asarray(world.object_radius, np.float32)[scenes["size"]] * side
    v = speed[..., None] * np.stack([np.cos(scenes["direction"]), np.sin(scenes["direction"])], -1)
    t = np.arange(world.frames, dtype=np.float32)
    p = scenes["start"][:, :, None, :] * side + t[None, None, :, None] * v[:, :, None, :]
    lo = radius[..., None, None]
    span = np.maximum(side - 2 * lo, 1e-3)
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def render_videos(
    world: AVWorldConfig, scenes: dict[str, np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """uint8 videos ``(N, T, S, S, 3)`` of the scenes (``rng`` draws the sensor noise).

    Background: the tint times a kind texture (plain; stripes of period 6 px; checker of 4 px;
    speckle, a fixed hash pattern), shifted by the clip's phase. Objects: flat-coloured shapes,
    drawn in slot order, each only in frames ``onset <= t < offset``.
    """
    n, side, frames = len(scenes["background"]), world.image_size, world.frames
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    ph = scenes["background_phase"][:, :, None, None]
    stripes = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * (yy[None] / 6.0 + ph[:, 0])))
    checker = (np.floor(xx[None] / 4 + 4 * ph[:, 0]) + np.floor(yy[None] / 4 + 4 * ph[:, 1])) % 2
    speckle = np.mod(np.sin(xx * 12.9898 + yy * 78.233) * 43758.5453, 1.0)[None] > 0.7
    speckle = np.roll(speckle, 1, axis=1) & np.ones((n, 1, 1), bool)
    texture = np.stack(
        [np.ones((n, side, side)), stripes, checker, speckle.astype(np.float32)], axis=1
    )[np.arange(n), scenes["background"]]
    level = 0.55 + 0.45 * texture  # (N, S, S): texture keeps half the tint's brightness
    background = level[..., None] * scenes["background_rgb"][:, None, None, :]
    video = np.broadcast_to(background[:, None], (n, frames, side, side, 3)).copy()
    centres = positions(world, scenes)
    radius = np.asarray(world.object_radius, np.float32)[scenes["size"]] * side
    t = np.arange(frames)
    for slot in range(scenes["valid"].shape[1]):
        shown = (
            scenes["valid"][:, slot, None]
            & (t[None] >= scenes["onset"][:, slot, None])
            & (t[None] < scenes["offset"][:, slot, None])
        )  # (N, T)
        dx = xx[None, None] - centres[:, slot, :, 0, None, None]
        dy = yy[None, None] - centres[:, slot, :, 1, None, None]
        inside = (
            shape_mask(
                scenes["kind"][:, slot, None, None, None], dx, dy, radius[:, slot, None, None, None]
            )
            & shown[:, :, None, None]
        )
        video = np.where(inside[..., None], scenes["colour"][:, slot, None, None, None], video)
    video = video + world.pixel_noise * rng.standard_normal(video.shape, dtype=np.float32)
    return np.round(np.clip(video, 0.0, 1.0) * 255.0).astype(np.uint8)
