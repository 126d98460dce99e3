"""Audio front end: waveform checks and log-mel spectrograms, in numpy.

The features of the audio tower (``rest_jax.models.audio_visual``), as in AST (Gong et al.,
Interspeech 2021): 25 ms Hann-windowed frames every 10 ms, the power spectrum, a triangular
mel filterbank (HTK mel scale, ``mel(f) = 2595 log10(1 + f / 700)``) and a floored log.
docs/method.md section 8.5 (video-audio retrieval).
"""

from __future__ import annotations

import numpy as np

LOG_FLOOR = 1e-10  # energies below this are floored before the log
_CHUNK = 256  # clips per chunk (bounds the framed copy's memory)


def check_waveforms(
    waveforms: np.ndarray, sample_rate: int, expected_rate: int, expected_samples: int
) -> np.ndarray:
    """Checks a batch of waveforms before feature extraction; returns it as float32.

    Raises:
      ValueError: the sample rate differs from ``expected_rate``; the array is not 2-D
        ``(N, S)``, not floating point, or its length is not ``expected_samples``; a clip holds
        NaN or inf, or is silent or constant (the first such clip index is named).
    """
    if int(sample_rate) != int(expected_rate):
        raise ValueError(
            f"waveforms are at {sample_rate} Hz but the model expects {expected_rate} Hz: "
            "resample them first"
        )
    x = np.asarray(waveforms)
    if x.ndim != 2:
        raise ValueError(f"waveforms must be 2-D (clips, samples), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"waveforms must be floating point in [-1, 1], got dtype {x.dtype}")
    if x.shape[1] != expected_samples:
        raise ValueError(
            f"waveforms have {x.shape[1]} samples per clip, expected {expected_samples} "
            f"({expected_samples / expected_rate:g} s at {expected_rate} Hz)"
        )
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"clip {int(np.flatnonzero(~finite)[0])} holds NaN or inf samples")
    peak = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(len(x))
    if (peak == 0).any():
        raise ValueError(f"clip {int(np.flatnonzero(peak == 0)[0])} is silent (all zeros)")
    constant = np.ptp(x, axis=1) == 0
    if constant.any():
        raise ValueError(f"clip {int(np.flatnonzero(constant)[0])} is constant (no signal)")
    return x.astype(np.float32, copy=False)


def mel_filterbank(num_mel_bins: int, fft_length: int, sample_rate: int) -> np.ndarray:
    """Triangular filters ``(fft_length // 2 + 1, num_mel_bins)`` on the HTK mel scale.

    Filter ``m`` rises linearly in mel from edge ``m`` to ``m + 1`` and falls to ``m + 2``,
    of ``num_mel_bins + 2`` edges evenly spaced in mel on ``[0, sample_rate / 2]``.
    """
    freqs = np.fft.rfftfreq(fft_length, 1.0 / sample_rate)
    mel = 2595.0 * np.log10(1.0 + freqs / 700.0)
    top = 2595.0 * np.log10(1.0 + (sample_rate / 2) / 700.0)
    edges = np.linspace(0.0, top, num_mel_bins + 2)
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    rise = (mel[:, None] - lo[None]) / (mid - lo)[None]
    fall = (hi[None] - mel[:, None]) / (hi - mid)[None]
    return np.maximum(0.0, np.minimum(rise, fall))


def frame_sizes(
    sample_rate: int, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0
) -> tuple[int, int, int]:
    """``(L, H, fft_length)`` of :func:`log_mel`: window and hop in samples, and the FFT size,
    twice the next power of two of ``L`` (1024 for 25 ms at 16 kHz)."""
    length = int(round(sample_rate * frame_length_ms / 1000.0))
    shift = int(round(sample_rate * frame_shift_ms / 1000.0))
    return length, shift, 2 * (1 << (length - 1).bit_length())


def hann_window(length: int) -> np.ndarray:
    """The periodic Hann window ``w[n] = 0.5 - 0.5 cos(2 pi n / L)`` of :func:`log_mel`."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)


def num_frames(num_samples: int, sample_rate: int, frame_length_ms: float, frame_shift_ms: float):
    """Frames of :func:`log_mel`: ``1 + (S - L) // H`` (no padding)."""
    length, shift, _ = frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    return 1 + (num_samples - length) // shift


def log_mel(
    waveforms: np.ndarray,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
) -> np.ndarray:
    """Log-mel spectrograms of a batch of waveforms.

    ``X[n, t, m] = log(max(sum_k |FFT(w * x_n[tH : tH + L])_k|^2 F[k, m], 1e-10))`` with ``w``
    the periodic Hann window of ``L`` samples, ``H`` the shift, the FFT zero-padded to twice
    the next power of two of ``L`` (1024 for 25 ms at 16 kHz: every one of 128 filters then
    covers an FFT bin) and ``F`` :func:`mel_filterbank`.

    Args:
      waveforms: ``(N, S)`` floating point samples.
      sample_rate: their rate in Hz.
      num_mel_bins: mel filters.
      frame_length_ms, frame_shift_ms: window length and hop.

    Returns:
      float32 ``(N, frames, num_mel_bins)``, ``frames = 1 + (S - L) // H``.
    """
    x = np.asarray(waveforms)
    if x.ndim != 2:
        raise ValueError(f"waveforms must be 2-D (clips, samples), got shape {x.shape}")
    length, shift, fft_length = frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    if length < 2 or shift < 1 or x.shape[1] < length:
        raise ValueError(
            f"clips of {x.shape[1]} samples are shorter than one {length}-sample frame"
        )
    window = hann_window(length).astype(np.float32)
    bank = mel_filterbank(num_mel_bins, fft_length, sample_rate).astype(np.float32)
    frames = num_frames(x.shape[1], sample_rate, frame_length_ms, frame_shift_ms)
    out = np.empty((len(x), frames, num_mel_bins), np.float32)
    for lo in range(0, len(x), _CHUNK):
        chunk = x[lo : lo + _CHUNK].astype(np.float32, copy=False)
        framed = np.lib.stride_tricks.sliding_window_view(chunk, length, axis=1)[:, ::shift]
        spectrum = np.fft.rfft(framed[:, :frames] * window, n=fft_length, axis=-1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        out[lo : lo + _CHUNK] = np.log(np.maximum(power @ bank, LOG_FLOOR))
    return out
