"""Video corruptions: the 16 image corruptions frame by frame, and three temporal ones.

Clips are uint8 ``(N, T, H, W, 3)`` arrays. An image corruption (``image_corruptions``) hits
every frame of a clip with one shared random draw: all frames of clip ``n`` are corrupted with
the clip's sample id, so the noise field, texture or displacement is the same in every frame
(a dirty lens or a fixed sensor defect, not flicker). The temporal corruptions only reorder or
repeat a clip's own frames:

* ``frame_drop``: each frame after the first is lost with probability ``DROP_RATE[s]`` and
  replaced by the last frame kept before it;
* ``frame_jitter``: frame ``t`` moves to where ``t + JITTER_FRAMES[s] * U(-1, 1)`` falls in
  sorted order (a local shuffle: frames rarely move more than the jitter width);
* ``freeze``: a stretch of about ``FREEZE_FRACTION[s]`` of the clip shows the stretch's first
  frame throughout.

Determinism: clip ``n`` draws only from generators keyed by ``(seed, sample_ids[n])``; the
severity is not part of the key, so the five severities of a clip share their draws (common
random numbers) and severity ``s + 1`` drops a superset of the frames of ``s``, jitters along
the same directions further, and freezes a longer stretch at the same relative place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rest_jax.data.image_corruptions import IMAGE_CORRUPTIONS, corrupt_images
from rest_jax.data.seeds import check_non_negative_int, check_sample_ids, check_severity

TEMPORAL_CORRUPTIONS: tuple[str, ...] = ("frame_drop", "frame_jitter", "freeze")
VIDEO_CORRUPTIONS: tuple[str, ...] = IMAGE_CORRUPTIONS + TEMPORAL_CORRUPTIONS

DROP_RATE = (0.1, 0.2, 0.3, 0.45, 0.6)  # probability that a frame (not the first) is lost
JITTER_FRAMES = (0.6, 0.9, 1.3, 1.8, 2.5)  # half-width of the uniform jitter, in frames
FREEZE_FRACTION = (0.2, 0.35, 0.5, 0.65, 0.8)  # frozen share of the clip's frame steps

_VIDEO_DOMAIN = 2  # seed-key tag; images use 0, texts 1, audio 3


def corrupt_videos(
    videos: np.ndarray,
    name: str,
    severity: int,
    seed: int = 0,
    sample_ids: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Corrupts a batch of clips.

    Args:
      videos: uint8 array ``(N, T, H, W, 3)``, ``T, H, W >= 1``.
      name: one of ``VIDEO_CORRUPTIONS``.
      severity: 1 (mild) to 5 (strong).
      seed: non-negative experiment seed.
      sample_ids: ``N`` non-negative clip ids (default ``0 .. N-1``); clip ``n``'s result
        depends only on ``(seed, sample_ids[n])``, not on the batch it comes in.

    Returns:
      uint8 array ``(N, T, H, W, 3)``.
    """
    videos = _check_videos(videos)
    if not isinstance(name, str) or name not in VIDEO_CORRUPTIONS:
        raise ValueError(f"unknown video corruption {name!r}; choose from {VIDEO_CORRUPTIONS}")
    severity = check_severity(severity)
    seed = check_non_negative_int(seed, "seed")
    n, t = videos.shape[:2]
    ids = check_sample_ids(sample_ids, n)
    if n == 0:
        return videos.copy()
    if name in IMAGE_CORRUPTIONS:
        frames = videos.reshape(n * t, *videos.shape[2:])
        out = corrupt_images(frames, name, severity, seed=seed, sample_ids=np.repeat(ids, t))
        return out.reshape(videos.shape)
    index = TEMPORAL_CORRUPTIONS.index(name)
    order = np.stack([_frame_order(name, severity, t, _rng(seed, i, index)) for i in ids])
    return np.take_along_axis(videos, order[:, :, None, None, None], axis=1)


def frame_order(name: str, severity: int, frames: int, seed: int = 0, sample_id: int = 0):
    """The source frame of each output frame for a temporal corruption of one clip.

    Args:
      name: one of ``TEMPORAL_CORRUPTIONS``.
      severity: 1 to 5.
      frames: the clip's length ``T >= 1``.
      seed: non-negative experiment seed.
      sample_id: non-negative clip id.

    Returns:
      int array ``(T,)``: output frame ``t`` is input frame ``order[t]``.
    """
    if name not in TEMPORAL_CORRUPTIONS:
        raise ValueError(
            f"unknown temporal corruption {name!r}; choose from {TEMPORAL_CORRUPTIONS}"
        )
    severity = check_severity(severity)
    frames = check_non_negative_int(frames, "frames")
    if frames < 1:
        raise ValueError("frames must be >= 1")
    rng = _rng(
        check_non_negative_int(seed, "seed"),
        check_non_negative_int(sample_id, "sample id"),
        TEMPORAL_CORRUPTIONS.index(name),
    )
    return _frame_order(name, severity, frames, rng)


def _frame_order(name: str, severity: int, t: int, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(t)  # the draws do not depend on the severity (common random numbers)
    if name == "frame_drop":
        kept = u >= DROP_RATE[severity - 1]  # a lost frame 0 stays: nothing comes before it
        return np.maximum.accumulate(np.where(kept, np.arange(t), 0))
    if name == "frame_jitter":
        keys = np.arange(t) + JITTER_FRAMES[severity - 1] * (2.0 * u - 1.0)
        return np.argsort(keys, kind="stable")
    # freeze: stretch length 1 + L with L = FREEZE_FRACTION * (T - 1) stochastically rounded.
    extra = min(t - 1, int(math.floor(FREEZE_FRACTION[severity - 1] * (t - 1) + u[0])))
    start = min(int(u[1] * (t - extra)), t - 1 - extra) if t > 1 else 0
    order = np.arange(t)
    order[start : start + extra + 1] = start
    return order


def _check_videos(videos) -> np.ndarray:
    if not isinstance(videos, np.ndarray):
        raise TypeError(f"videos must be a numpy array, got {type(videos).__name__}")
    if videos.dtype != np.uint8:
        raise TypeError(f"videos must have dtype uint8, got {videos.dtype}")
    if videos.ndim != 5 or videos.shape[-1] != 3 or min(videos.shape[1:4]) < 1:
        raise ValueError(
            f"videos must have shape (N, T, H, W, 3) with T, H, W >= 1, got {videos.shape}"
        )
    return videos


def _rng(seed: int, sample_id: int, index: int) -> np.random.Generator:
    key = [seed, int(sample_id), _VIDEO_DOMAIN, index]
    return np.random.default_rng(np.random.SeedSequence(key))
