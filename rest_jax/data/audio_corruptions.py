"""Audio corruptions: six synthetic background noises mixed in at a signal-to-noise ratio.

The six noise types are those of the audio-corrupted benchmarks of READ (Yang et al., ICLR
2024: Kinetics-50-C, VGGSound-C): Gaussian noise and five environmental sounds. READ mixes in
recordings; this module synthesises each noise with numpy/scipy, so that nothing is downloaded
and every draw is reproducible:

* ``gaussian_noise``: white Gaussian noise;
* ``traffic``: low-pass rumble (< 200 Hz) swelling and fading as vehicles pass, plus the
  harmonics of an engine whose fundamental (30-60 Hz) drifts slowly;
* ``crowd``: babble of several talkers, each a glottal pulse train (90-250 Hz, with vibrato)
  through three formant resonators, switched on and off at a syllable rate of 3-6 Hz;
* ``rain``: dense droplet clicks (short decaying 2-6 kHz tones at random times) over a hiss
  high-passed at 2 kHz;
* ``thunder``: rumbles of low-pass noise (< 150 Hz) that strike at random times, rise within
  tens of milliseconds and decay over 0.1-0.35 s, over a faint rumble floor;
* ``wind``: band-pass noise whose centre wanders slowly between 150 Hz and 1.2 kHz, with
  gusts (a slowly varying loudness).

Severity ``s`` mixes the noise at ``SNR_DB[s - 1]`` dB relative to the power of each clean
clip: ``out = clean + g noise`` with ``g`` chosen so that ``10 log10(P_clean / P_(g noise))`` is
exactly the target (powers are means of squares over the clip). No clipping is applied.

Determinism: clip ``n``'s noise depends only on ``(seed, sample_ids[n])``, the noise type, the
clip length and the sample rate. The severity is not part of the key, so the five severities
of a clip add the same noise at five gains.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import scipy.signal

from rest_jax.data.seeds import check_non_negative_int, check_sample_ids, check_severity

AUDIO_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "traffic",
    "crowd",
    "rain",
    "thunder",
    "wind",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
SNR_DB: tuple[float, ...] = (20.0, 15.0, 10.0, 5.0, 0.0)
MIN_SAMPLE_RATE = 8000

_AUDIO_DOMAIN = 3  # seed-key tag; images use 0, texts 1, videos 2


def corrupt_audio(
    waveforms: np.ndarray,
    name: str,
    severity: int,
    seed: int = 0,
    sample_ids: Sequence[int] | np.ndarray | None = None,
    sample_rate: int = 16000,
) -> np.ndarray:
    """Mixes a synthetic noise into each clip at the severity's signal-to-noise ratio.

    Args:
      waveforms: float array ``(N, S)`` of mono clips, finite, none silent.
      name: one of ``AUDIO_CORRUPTIONS``.
      severity: 1 (SNR 20 dB) to 5 (0 dB), see ``SNR_DB``.
      seed: non-negative experiment seed.
      sample_ids: ``N`` non-negative clip ids (default ``0 .. N-1``).
      sample_rate: samples per second (>= 8000).

    Returns:
      float32 array ``(N, S)``.
    """
    waveforms = _check_waveforms(waveforms)
    if not isinstance(name, str) or name not in AUDIO_CORRUPTIONS:
        raise ValueError(f"unknown audio corruption {name!r}; choose from {AUDIO_CORRUPTIONS}")
    severity = check_severity(severity)
    seed = check_non_negative_int(seed, "seed")
    sample_rate = check_non_negative_int(sample_rate, "sample_rate")
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be >= {MIN_SAMPLE_RATE} Hz, got {sample_rate}")
    n, length = waveforms.shape
    ids = check_sample_ids(sample_ids, n)
    clean = waveforms.astype(np.float64)
    power = np.mean(clean**2, axis=1)
    silent = np.flatnonzero(power == 0.0)
    if silent.size:
        raise ValueError(
            f"clip(s) {silent[:5].tolist()} are silent (all zeros): the signal-to-noise ratio "
            "is undefined"
        )
    index = AUDIO_CORRUPTIONS.index(name)
    out = np.empty((n, length), np.float32)
    target = 10.0 ** (-SNR_DB[int(severity) - 1] / 10.0)
    for row, clip_id in enumerate(ids):
        rng = np.random.default_rng(
            np.random.SeedSequence([seed, int(clip_id), _AUDIO_DOMAIN, index])
        )
        noise = noise_signal(name, length, sample_rate, rng)
        gain = math.sqrt(power[row] * target / np.mean(noise**2))
        out[row] = clean[row] + gain * noise
    return out


def noise_signal(name: str, length: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of noise ``name`` (float64, ``(length,)``, not silent, unscaled).

    Args:
      name: one of ``AUDIO_CORRUPTIONS``.
      length: samples, >= 1.
      sample_rate: samples per second.
      rng: the clip's generator.

    Returns:
      float64 array ``(length,)``.
    """
    noise = _NOISES[name](length, sample_rate, rng)
    if not np.any(noise):  # e.g. a single sample of filtered noise that came out as 0
        noise = rng.standard_normal(length)
    return noise


# ----------------------------------------------------------------------------------------------
# The noises (each draws only from ``rng``; all at unit scale, the caller sets the power)
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _sos(kind: str, freqs: tuple[float, ...], sample_rate: int, order: int = 4) -> np.ndarray:
    nyquist = sample_rate / 2.0
    wn = [min(f, 0.95 * nyquist) for f in freqs]
    return scipy.signal.butter(
        order, wn if len(wn) > 1 else wn[0], kind, fs=sample_rate, output="sos"
    )


def _filtered(x: np.ndarray, kind: str, freqs, sample_rate: int, order: int = 4) -> np.ndarray:
    return scipy.signal.sosfilt(_sos(kind, tuple(freqs), sample_rate, order), x)


def _smooth_walk(rng, length: int, sample_rate: int, rate_hz: float) -> np.ndarray:
    """A slow random signal, zero mean and unit std, varying at about ``rate_hz``: control
    points every ``1 / rate_hz`` s, interpolated by cosine steps."""
    step = max(1, int(sample_rate / rate_hz))
    points = rng.standard_normal(length // step + 2)
    t = np.arange(length) / step
    k = np.floor(t).astype(np.int64)
    w = 0.5 - 0.5 * np.cos(np.pi * (t - k))
    return points[k] * (1.0 - w) + points[k + 1] * w


def _gaussian_noise(length, sample_rate, rng):
    return rng.standard_normal(length)


def _traffic(length, sample_rate, rng):
    t = np.arange(length) / sample_rate
    rumble = _filtered(rng.standard_normal(length), "lowpass", (200.0,), sample_rate)
    rumble /= np.std(rumble) + 1e-12
    passing = 1.0 + 0.6 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 2 * np.pi))
    f0 = rng.uniform(30.0, 60.0) * (
        1.0 + 0.1 * np.tanh(_smooth_walk(rng, length, sample_rate, 1.0))
    )
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    engine = sum((0.8 / h) * np.sin(h * phase + rng.uniform(0, 2 * np.pi)) for h in range(1, 5))
    return passing * (rumble + engine)


_FORMANTS = ((300.0, 800.0), (900.0, 2300.0), (2300.0, 3000.0))


def _crowd(length, sample_rate, rng):
    t = np.arange(length) / sample_rate
    out = np.zeros(length)
    for _ in range(4):  # talkers
        f0 = rng.uniform(90.0, 250.0) * (
            1.0 + 0.03 * np.sin(2 * np.pi * 5.0 * t + rng.uniform(0, 6.3))
        )
        cycles = np.cumsum(f0) / sample_rate + rng.uniform()
        pulses = np.diff(np.floor(cycles), prepend=np.floor(cycles[0])).astype(np.float64)
        voice = _filtered(pulses, "lowpass", (3500.0,), sample_rate, 2)  # glottal roll-off
        formants = [rng.uniform(lo, hi) for lo, hi in _FORMANTS]
        voiced = sum(
            _filtered(voice, "bandpass", (0.9 * f, 1.1 * f), sample_rate, 1) / (k + 1)
            for k, f in enumerate(formants)
        )
        voiced /= np.std(voiced) + 1e-12
        syllables = np.sin(np.pi * (rng.uniform(3.0, 6.0) * t + rng.uniform())) ** 2
        out += voiced * syllables**2
    return out


def _rain(length, sample_rate, rng):
    hiss = _filtered(rng.standard_normal(length), "highpass", (2000.0,), sample_rate)
    drops = np.zeros(length)
    count = rng.poisson(2000.0 * length / sample_rate) + 1
    at = rng.integers(0, length, count)
    np.add.at(drops, at, rng.lognormal(0.0, 0.7, count) * rng.choice([-1.0, 1.0], count))
    ring = np.arange(int(0.003 * sample_rate) + 1) / sample_rate
    tone = min(rng.uniform(2500.0, 6000.0), 0.4 * sample_rate)
    click = np.exp(-ring / 0.0008) * np.sin(2 * np.pi * tone * ring + 0.5 * np.pi)
    drops = scipy.signal.fftconvolve(drops, click)[:length]
    drops = _filtered(drops, "highpass", (2000.0,), sample_rate)
    return 0.5 * hiss / (np.std(hiss) + 1e-12) + drops / (np.std(drops) + 1e-12)


def _thunder(length, sample_rate, rng):
    duration = length / sample_rate
    t = np.arange(length) / sample_rate
    rumble = _filtered(rng.standard_normal(length), "lowpass", (150.0,), sample_rate)
    rumble /= np.std(rumble) + 1e-12
    # One strike always lands in the clip, after a quiet lead-in; more come at 0.5 per second.
    strikes = [rng.uniform(0.1, 0.6) * duration]
    strikes += list(rng.uniform(0.0, duration, rng.poisson(0.5 * duration)))
    envelope = np.full(length, 0.02)
    for start in strikes:
        rise, decay = rng.uniform(0.01, 0.04), rng.uniform(0.1, 0.35)
        dt = np.maximum(t - start, 0.0)
        shape = np.where(t < start, 0.0, (1.0 - np.exp(-dt / rise)) * np.exp(-dt / decay))
        envelope += rng.uniform(0.5, 1.0) * shape
    return envelope * rumble


_WIND_BANDS = tuple(150.0 * 2.0 ** (k / 2.0) for k in range(7))  # 150 Hz .. 1.2 kHz


def _wind(length, sample_rate, rng):
    centre = 2.0 + 1.2 * np.tanh(_smooth_walk(rng, length, sample_rate, 1.5))  # in band steps
    out = np.zeros(length)
    for k, f in enumerate(_WIND_BANDS):
        band = _filtered(
            rng.standard_normal(length), "bandpass", (f / 1.2, f * 1.2), sample_rate, 2
        )
        band /= np.std(band) + 1e-12
        out += band * np.exp(-0.5 * ((k - centre) / 0.8) ** 2)
    gusts = np.exp(0.6 * _smooth_walk(rng, length, sample_rate, 2.0))
    return gusts * out


_NOISES = {
    "gaussian_noise": _gaussian_noise,
    "traffic": _traffic,
    "crowd": _crowd,
    "rain": _rain,
    "thunder": _thunder,
    "wind": _wind,
}
assert tuple(_NOISES) == AUDIO_CORRUPTIONS


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------
def _check_waveforms(waveforms) -> np.ndarray:
    if not isinstance(waveforms, np.ndarray):
        raise TypeError(f"waveforms must be a numpy array, got {type(waveforms).__name__}")
    if not np.issubdtype(waveforms.dtype, np.floating):
        raise TypeError(f"waveforms must be a float array, got dtype {waveforms.dtype}")
    if waveforms.ndim != 2 or waveforms.shape[1] < 1:
        raise ValueError(f"waveforms must have shape (N, S) with S >= 1, got {waveforms.shape}")
    if not np.all(np.isfinite(waveforms)):
        raise ValueError("waveforms hold NaN or infinite values")
    return waveforms
