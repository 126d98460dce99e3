"""A split of the audio-visual world: videos, waveforms, scene attributes and the ceiling."""

from __future__ import annotations

import dataclasses

import numpy as np

from rest_jax.data.avworld.config import AVWorldConfig, split_rng
from rest_jax.data.avworld.render_audio import render_waveforms
from rest_jax.data.avworld.render_video import render_videos
from rest_jax.data.avworld.scenes import recall_ceiling, sample_scenes

# Clips rendered at a time (bounds the memory of rendering: ~100 MB per chunk).
_CHUNK = 500


@dataclasses.dataclass(frozen=True)
class AVSplit:
    """One split: clip ``i``'s video pairs with clip ``i``'s sound (one relevant item).

    Attributes:
      videos: uint8 ``(N, T, H, W, 3)``.
      waveforms: float32 ``(N, S)`` at ``sample_rate``.
      scenes: per-clip scene attributes (``rest_jax.data.avworld.SCENE_KEYS``).
      ceiling: measured R@1 ceiling in percent, ``{"v2a", "a2v"}`` (``recall_ceiling``).
      sample_rate: the waveforms' rate (``world.sample_rate``).
    """

    videos: np.ndarray
    waveforms: np.ndarray
    scenes: dict[str, np.ndarray]
    ceiling: dict[str, float]
    sample_rate: int

    def __len__(self) -> int:
        return len(self.videos)

    def head(self, n: int) -> AVSplit:
        """The first ``n`` clips, with the ceiling of that smaller gallery."""
        scenes = {k: v[:n] for k, v in self.scenes.items()}
        return AVSplit(
            self.videos[:n], self.waveforms[:n], scenes, recall_ceiling(scenes), self.sample_rate
        )


def generate_av_split(
    world: AVWorldConfig, split: str, seed: int = 0, num_clips: int | None = None
) -> AVSplit:
    """Generates a split (deterministic in ``(world, split, seed, num_clips)``).

    Args:
      world: the world's knobs.
      split: "train", "val" or "test"; each draws from its own stream
        ``SeedSequence([world key, seed, split key])``, so splits are independent.
      seed: base seed.
      num_clips: clips to draw (``None``: the split's default size from ``world``).

    Returns:
      the :class:`AVSplit`.
    """
    n = world.split_size(split) if num_clips is None else int(num_clips)
    if n < 1:
        raise ValueError(f"num_clips must be >= 1, got {n}")
    rng = split_rng(seed, split)
    scenes = sample_scenes(world, n, rng)
    videos, waves = [], []
    for lo in range(0, n, _CHUNK):
        chunk = {k: v[lo : lo + _CHUNK] for k, v in scenes.items()}
        videos.append(render_videos(world, chunk, rng))
        waves.append(render_waveforms(world, chunk, rng))
    return AVSplit(
        np.concatenate(videos),
        np.concatenate(waves),
        scenes,
        recall_ceiling(scenes),
        world.sample_rate,
    )
