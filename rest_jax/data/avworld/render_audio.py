"""Synthesis of the world's sound: each object's harmonic tone while it is visible, over the
background's ambient noise band."""

from __future__ import annotations

import numpy as np

from rest_jax.data.avworld.config import (
    BACKGROUND_BANDS_HZ,
    OBJECT_HARMONICS,
    OBJECT_PITCH_HZ,
    AVWorldConfig,
)


def gate(world: AVWorldConfig, onset: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Envelope ``(N, S)`` that is 1 on ``[onset, offset) * T_frame`` seconds, 0 elsewhere,
    with linear ramps of ``ramp_ms`` inside the interval (``T_frame = seconds / frames``)."""
    t = np.arange(world.num_samples, dtype=np.float32) / world.sample_rate
    frame = world.seconds / world.frames
    a = (onset * frame)[:, None].astype(np.float32)
    b = (offset * frame)[:, None].astype(np.float32)
    ramp = world.ramp_ms / 1000.0
    return np.clip(np.minimum(t[None] - a, b - t[None]) / ramp, 0.0, 1.0)


def ambient(world: AVWorldConfig, kinds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Band-limited noise ``(N, S)`` of RMS ``ambient_level``: white noise whose spectrum is
    kept in the kind's band ``BACKGROUND_BANDS_HZ[k]``."""
    n, s = len(kinds), world.num_samples
    spectrum = np.fft.rfft(rng.standard_normal((n, s)), axis=1)
    freqs = np.fft.rfftfreq(s, 1.0 / world.sample_rate)
    bands = np.asarray(BACKGROUND_BANDS_HZ)[kinds]
    keep = (freqs[None] >= bands[:, :1]) & (freqs[None] < bands[:, 1:])
    noise = np.fft.irfft(spectrum * keep, n=s, axis=1)
    rms = np.sqrt(np.mean(noise**2, axis=1, keepdims=True))
    return (world.ambient_level * noise / np.maximum(rms, 1e-12)).astype(np.float32)


def render_waveforms(
    world: AVWorldConfig, scenes: dict[str, np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """float32 waveforms ``(N, S)`` at ``world.sample_rate``.

    Object ``j`` of kind ``k`` sounds ``A_size * g(t) * m(t) * sum_h a_kh sin(2 pi h f t + phi_h)
    / sum_h a_kh`` with ``f = OBJECT_PITCH_HZ[k] * pitch_factor``, ``g`` its gate
    (:func:`gate`) and ``m(t) = 1 - depth (1 - cos(2 pi r t + psi)) / 2`` the tremolo of its
    speed's rate ``r``; plus the ambient band (:func:`ambient`) and white noise.
    """
    n, s = len(scenes["background"]), world.num_samples
    t = np.arange(s, dtype=np.float64) / world.sample_rate
    out = ambient(world, scenes["background"], rng).astype(np.float64)
    harmonics = np.asarray(OBJECT_HARMONICS)
    pitch = np.asarray(OBJECT_PITCH_HZ)
    loud = np.asarray(world.loudness)
    rate = np.asarray(world.tremolo_hz)
    for slot in range(scenes["valid"].shape[1]):
        kind = scenes["kind"][:, slot]
        f = pitch[kind] * scenes["pitch_factor"][:, slot]
        phases = rng.uniform(0, 2 * np.pi, (n, harmonics.shape[1]))
        amps = harmonics[kind]  # (N, H)
        tone = np.zeros((n, s))
        for h in range(harmonics.shape[1]):
            tone += amps[:, h, None] * np.sin(
                2 * np.pi * (h + 1) * f[:, None] * t + phases[:, h, None]
            )
        tone /= amps.sum(axis=1, keepdims=True)
        trem = 1.0 - world.tremolo_depth * 0.5 * (
            1.0
            - np.cos(
                2 * np.pi * rate[scenes["speed"][:, slot], None] * t
                + scenes["tremolo_phase"][:, slot, None]
            )
        )
        env = gate(world, scenes["onset"][:, slot], scenes["offset"][:, slot])
        amp = loud[scenes["size"][:, slot]] * scenes["valid"][:, slot]
        out += amp[:, None] * env * trem * tone
    out += world.audio_noise * rng.standard_normal((n, s))
    return out.astype(np.float32)
