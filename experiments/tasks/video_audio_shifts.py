"""Query shifts of video-audio retrieval: their grids, spelling checks, and application.

Two directions: ``v2a`` (video queries, corrupted, against a clean audio gallery) and ``a2v``
(audio queries, corrupted, against a clean video gallery). A shift is ``name@severity`` with
severity 1-5: a video corruption (``rest_jax.data.video_corruptions``: the 16 image
corruptions frame by frame and ``frame_drop``, ``frame_jitter``, ``freeze``) for ``v2a``, an
audio corruption (``rest_jax.data.audio_corruptions``: ``gaussian_noise``, ``traffic``,
``crowd``, ``rain``, ``thunder``, ``wind`` at SNR 20-0 dB) for ``a2v``. ``gaussian_noise`` is
both: its meaning follows the direction. ``clean`` leaves the queries as they are.
"""

from __future__ import annotations

import numpy as np

from rest_jax.data.audio_corruptions import AUDIO_CORRUPTIONS, SNR_DB, corrupt_audio
from rest_jax.data.video_corruptions import VIDEO_CORRUPTIONS, corrupt_videos

DIRECTIONS = ("v2a", "a2v")
SEVERITIES = (1, 2, 3, 4, 5)
_CORRUPTIONS = {"v2a": VIDEO_CORRUPTIONS, "a2v": AUDIO_CORRUPTIONS}
_KIND = {"v2a": "video", "a2v": "audio"}
_A_KIND = {"v2a": "a video", "a2v": "an audio"}
_OTHER = {"v2a": "a2v", "a2v": "v2a"}


def check_direction(direction: str) -> str:
    """``direction`` if it is one of ``DIRECTIONS``; ValueError otherwise."""
    if direction not in DIRECTIONS:
        raise ValueError(
            f"unknown direction {direction!r} of video-audio retrieval; "
            f"expected one of {DIRECTIONS}"
        )
    return direction


def full_grid(direction: str) -> list[str]:
    """Every corruption of ``direction``'s queries at every severity.

    Args:
      direction: ``"v2a"`` (19 video corruptions) or ``"a2v"`` (6 audio corruptions).

    Returns:
      ``name@severity`` specs, corruption-major.
    """
    check_direction(direction)
    return [f"{name}@{s}" for name in _CORRUPTIONS[direction] for s in SEVERITIES]


def parse_shift(spec: str, direction: str) -> tuple[str, int] | None:
    """``(name, severity)`` of a shift of ``direction``, None for ``"clean"``.

    Args:
      spec: ``"clean"`` or ``name@severity``.
      direction: ``"v2a"`` or ``"a2v"``.

    Returns:
      ``(name, severity)`` or None.

    Raises:
      ValueError naming what is wrong: the direction, an unknown name (listing the known ones,
      with a hint when it shifts the other direction), or a severity that is not 1-5.
    """
    check_direction(direction)
    if spec == "clean":
        return None
    if not isinstance(spec, str):
        raise ValueError(f"a shift is a string name@severity, got {spec!r}")
    name, at, level = spec.partition("@")
    known = _CORRUPTIONS[direction]
    if name not in known:
        other = _OTHER[direction]
        hint = (
            f" ({_A_KIND[other]} corruption: it shifts {other} queries)"
            if name in _CORRUPTIONS[other]
            else ""
        )
        raise ValueError(
            f"{spec}: unknown {_KIND[direction]} corruption {name!r}{hint}; "
            f"known: {', '.join(known)}"
        )
    if not at or not level.isdigit() or int(level) not in SEVERITIES:
        raise ValueError(
            f"{spec}: the severity of {_A_KIND[direction]} corruption is an integer 1-5 ({name}@3)"
        )
    return name, int(level)


def check_shift(spec: str, direction: str) -> None:
    """Raises ValueError when ``spec`` is not a shift of ``direction``'s queries (see
    :func:`parse_shift`)."""
    parse_shift(spec, direction)


def shift_queries(
    direction: str,
    spec: str,
    videos: np.ndarray | None,
    waveforms: np.ndarray | None,
    seed: int,
    sample_rate: int = 16000,
    sample_ids=None,
) -> np.ndarray:
    """The query inputs of ``direction`` under shift ``spec``.

    Args:
      direction: ``"v2a"`` (the queries are ``videos``) or ``"a2v"`` (``waveforms``).
      spec: ``"clean"`` or ``name@severity``.
      videos: uint8 ``(N, T, H, W, 3)`` clips (needed for ``v2a``; may be None for ``a2v``).
      waveforms: float ``(N, S)`` mono audio (needed for ``a2v``; may be None for ``v2a``).
      seed: non-negative seed of the corruption draws.
      sample_rate: audio samples per second.
      sample_ids: per-query ids keying the draws (default ``0 .. N-1``).

    Returns:
      the query array: the videos (uint8) or waveforms (float32) corrupted, or unchanged for
      ``"clean"``.
    """
    shift = parse_shift(spec, direction)
    queries = videos if direction == "v2a" else waveforms
    if queries is None:
        what = "videos" if direction == "v2a" else "waveforms"
        raise ValueError(f"{direction} queries are the {what}, got None")
    if shift is None:
        return queries
    name, severity = shift
    if direction == "v2a":
        return corrupt_videos(queries, name, severity, seed=seed, sample_ids=sample_ids)
    return corrupt_audio(
        queries, name, severity, seed=seed, sample_ids=sample_ids, sample_rate=sample_rate
    )


def describe(spec: str, direction: str) -> str:
    """A short human description of a shift, e.g. ``"rain at 10 dB SNR"``."""
    shift = parse_shift(spec, direction)
    if shift is None:
        return "clean"
    name, severity = shift
    if direction == "a2v":
        return f"{name} at {SNR_DB[severity - 1]:g} dB SNR"
    return f"{name}, severity {severity}"
