"""Rendering scenes to ``uint8`` images (signed distance fields, hashed per-image noise)."""

from __future__ import annotations

import numpy as np

from rest_jax.data.synthworld.words import SHAPES
from rest_jax.data.synthworld.world_config import WorldConfig


def _fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (uint32 in, well-mixed uint32 out)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> np.uint32(13))
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


def hashed_uniform(seeds: np.ndarray, shape: tuple[int, ...], stream: int) -> np.ndarray:
    """Counter-based uniforms in [0, 1): float32 [len(seeds), *shape].

    u[i, k] = fmix32(fmix32(seed_i xor stream * 0x9E3779B9) + k * 0x9E3779B1) / 2^32. Each image's
    noise depends on its own seed only, so a composed target re-renders its reference's noise.
    """
    count = int(np.prod(shape))
    key = _fmix32(np.asarray(seeds, np.uint32) ^ np.uint32((stream * 0x9E3779B9) & 0xFFFFFFFF))
    counter = np.arange(count, dtype=np.uint32) * np.uint32(0x9E3779B1)
    bits = _fmix32(key[:, None] + counter[None, :])
    return (bits >> np.uint32(8)).astype(np.float32).reshape(len(key), *shape) / np.float32(2**24)


def _segment_sdf(px, py, ax, ay, bx, by):
    """Distance to segment AB, negative on the side of AB where the origin lies."""
    ex, ey = bx - ax, by - ay
    wx, wy = px - ax, py - ay
    t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    dist = np.hypot(wx - ex * t, wy - ey * t)
    origin_side = np.sign(ex * (0.0 - ay) - ey * (0.0 - ax))
    return np.where(np.sign(ex * wy - ey * wx) == origin_side, -dist, dist)


def _box_sdf(u, v, half_width, half_height):
    qx, qy = np.abs(u) - half_width, np.abs(v) - half_height
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _star_sdf(u, v, points: int, outer: float, inner: float):
    """k-fold mirror-symmetric star (inner = outer * cos(pi / k) gives the regular polygon).

    The point is folded into the wedge [0, pi/k] around the first vertex (pointing up), where the
    nearest outline piece is the edge from the outer vertex to the next inner vertex.
    """
    half = np.pi / points
    theta = np.arctan2(u, v)  # 0 = up
    theta = np.abs(np.mod(theta + half, 2 * half) - half)
    rho = np.hypot(u, v)
    px, py = rho * np.cos(theta), rho * np.sin(theta)
    return _segment_sdf(px, py, outer, 0.0, inner * np.cos(half), inner * np.sin(half))


def shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of a shape of unit radius, at (u, v) with v up.

    Shapes: circle (radius 0.95), ring (0.48-1.02), square (half side 0.82), bar (1.05 x 0.36),
    diamond (rhombus 0.78 x 1.15), cross (arms 1.0 long, 0.3 half-thick), triangle (circumradius
    1.15, pointing up), star (5 points, radii 1.15 and 0.48).
    """
    if shape == "circle":
        return np.hypot(u, v) - 0.95
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.75) - 0.27
    if shape == "square":
        return _box_sdf(u, v, 0.82, 0.82)
    if shape == "bar":
        return _box_sdf(u, v, 1.05, 0.36)
    if shape == "diamond":
        return _segment_sdf(np.abs(u), np.abs(v), 0.78, 0.0, 0.0, 1.15)
    if shape == "cross":
        # Fold to |u| >= |v|: there the horizontal arm is the nearer one.
        au, av = np.abs(u), np.abs(v)
        return _box_sdf(np.maximum(au, av), np.minimum(au, av), 1.0, 0.3)
    if shape == "triangle":
        return _star_sdf(u, v, 3, 1.15, 1.15 * np.cos(np.pi / 3))
    if shape == "star":
        return _star_sdf(u, v, 5, 1.15, 0.48)
    raise ValueError(f"unknown shape {shape!r}")


def _bilinear(coarse: np.ndarray, size: int) -> np.ndarray:
    """Upsamples [n, g, g] grids to [n, size, size] by bilinear interpolation."""
    g = coarse.shape[-1]
    pos = (np.arange(size) + 0.5) / size * (g - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, g - 2)
    f = (pos - i0).astype(np.float32)
    rows = coarse[:, i0] * (1 - f)[None, :, None] + coarse[:, i0 + 1] * f[None, :, None]
    return rows[:, :, i0] * (1 - f) + rows[:, :, i0 + 1] * f


def _background_pattern(scenes, idx, grid) -> np.ndarray:
    """Background pattern in [-1, 1], float32 [len(idx), S, S]."""
    gx, gy = grid
    kind = scenes["background_kind"][idx][:, None, None]
    angle = scenes["background_angle"][idx][:, None, None]
    period = scenes["background_period"][idx][:, None, None]
    along = np.cos(angle) * (gx - 0.5) + np.sin(angle) * (gy - 0.5)
    pattern = np.zeros(along.shape, np.float32)
    pattern = np.where(kind == 1, np.clip(2.0 * along, -1, 1), pattern)  # gradient
    pattern = np.where(kind == 2, np.tanh(3.0 * np.sin(2 * np.pi * along / period)), pattern)
    checks = np.sin(2 * np.pi * gx / period) * np.sin(2 * np.pi * gy / period)
    pattern = np.where(kind == 3, np.tanh(6.0 * checks), pattern)  # checker
    noisy = np.nonzero(kind[:, 0, 0] == 4)[0]
    if len(noisy):  # smooth value noise on a 6x6 lattice
        coarse = 2.0 * hashed_uniform(scenes["noise_seed"][idx[noisy]], (6, 6), stream=0) - 1.0
        pattern[noisy] = _bilinear(coarse, gx.shape[0])
    return pattern.astype(np.float32)


def render_scenes(
    scenes: dict[str, np.ndarray], config: WorldConfig, chunk_size: int = 1024
) -> np.ndarray:
    """Renders scenes to uint8 images [N, S, S, 3] (vectorised over images, chunked).

    Pixel value = background_rgb + background_contrast * pattern, then each valid object in slot
    order is composited with coverage alpha = clip(0.5 - d, 0, 1), d the signed distance to its
    outline in pixels (one-pixel anti-aliasing), then sensor noise (triangular, standard
    deviation pixel_noise), then rounding to uint8.
    """
    n = len(scenes["n_objects"])
    s = config.image_size
    centres = (np.arange(s, dtype=np.float32) + 0.5) / s
    grid = np.meshgrid(centres, centres, indexing="xy")
    out = np.empty((n, s, s, 3), np.uint8)
    for start in range(0, n, chunk_size):
        idx = np.arange(start, min(n, start + chunk_size))
        pattern = _background_pattern(scenes, idx, grid)
        img = scenes["background_rgb"][idx][:, None, None, :] + (
            np.float32(config.background_contrast) * pattern[..., None]
        )
        for slot in range(scenes["object_valid"].shape[1]):
            for shape_id, shape in enumerate(SHAPES):
                sel = np.nonzero(
                    scenes["object_valid"][idx, slot]
                    & (scenes["object_shape"][idx, slot] == shape_id)
                )[0]
                if not len(sel):
                    continue
                rows = idx[sel]
                r = scenes["object_radius"][rows, slot][:, None, None]
                dx = (grid[0][None] - scenes["object_x"][rows, slot][:, None, None]) / r
                dy = (scenes["object_y"][rows, slot][:, None, None] - grid[1][None]) / r
                a = scenes["object_angle"][rows, slot][:, None, None]
                cos, sin = np.cos(a), np.sin(a)
                u, v = cos * dx + sin * dy, cos * dy - sin * dx
                alpha = np.clip(0.5 - shape_sdf(shape, u, v) * (r * s), 0.0, 1.0)[..., None]
                rgb = scenes["object_rgb"][rows, slot][:, None, None, :]
                img[sel] += alpha * (rgb - img[sel])
        if config.pixel_noise > 0:
            # U(0,1) + U(0,1) - 1 has standard deviation 1/sqrt(6).
            pair = hashed_uniform(scenes["noise_seed"][idx], (2, s, s, 3), stream=1)
            img += np.float32(config.pixel_noise * np.sqrt(6.0)) * (pair[:, 0] + pair[:, 1] - 1)
        out[idx] = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return out
