"""Tests for rest_jax.data.audio_corruptions: SNR-controlled mixing of six synthetic noises,
each with its spectral / temporal signature."""

import numpy as np
import pytest
import scipy.signal

from rest_jax.data.audio_corruptions import (
    AUDIO_CORRUPTIONS,
    SEVERITIES,
    SNR_DB,
    corrupt_audio,
    noise_signal,
)

SR = 16000


def speech_like(n: int = 3, seconds: float = 0.25, seed: int = 0) -> np.ndarray:
    """``n`` clean clips: a few tones with a slow envelope plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    out = []
    for _ in range(n):
        tones = sum(
            np.sin(2 * np.pi * rng.uniform(150, 900) * t + rng.uniform(0, 6)) for _ in range(3)
        )
        out.append(
            (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * tones + 0.05 * rng.standard_normal(t.size)
        )
    return (0.1 * np.stack(out)).astype(np.float32)


def snr_db(clean, noisy):
    clean = clean.astype(np.float64)
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean**2, axis=1) / np.mean(noise**2, axis=1))


def noises(name, seconds, count=6):
    length = int(seconds * SR)
    return np.stack(
        [noise_signal(name, length, SR, np.random.default_rng([9, i])) for i in range(count)]
    )


def band_fraction(x, lo, hi):
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / SR)
    power = np.abs(np.fft.rfft(x)) ** 2
    return power[..., (freqs >= lo) & (freqs < hi)].sum(-1) / power.sum(-1)


def frame_rms(x, window=0.025, hop=0.01):
    w, h = int(window * SR), int(hop * SR)
    starts = np.arange(0, x.shape[-1] - w + 1, h)
    return np.sqrt(np.stack([np.mean(x[..., s : s + w] ** 2, -1) for s in starts], -1))


def syllable_modulation(x):
    """Share of the frame-loudness fluctuation (100 frames/s) at 2-10 Hz."""
    env = frame_rms(x)
    env = env - env.mean(-1, keepdims=True)
    freqs = np.fft.rfftfreq(env.shape[-1], 0.01)
    power = np.abs(np.fft.rfft(env)) ** 2
    return power[..., (freqs >= 2) & (freqs <= 10)].sum(-1) / power[..., freqs > 0].sum(-1)


def centroid_wander(x, window=0.064):
    """Std over 64 ms frames of the log2 spectral centroid (octaves)."""
    w = int(window * SR)
    freqs = np.fft.rfftfreq(w, 1 / SR)
    cents = []
    for s in range(0, x.shape[-1] - w + 1, w):
        p = np.abs(np.fft.rfft(x[..., s : s + w])) ** 2
        cents.append(np.log2((p * freqs).sum(-1) / p.sum(-1)))
    return np.std(np.stack(cents, -1), -1)


def test_tables():
    assert AUDIO_CORRUPTIONS == ("gaussian_noise", "traffic", "crowd", "rain", "thunder", "wind")
    assert SEVERITIES == (1, 2, 3, 4, 5) and len(SNR_DB) == 5
    assert all(a > b for a, b in zip(SNR_DB, SNR_DB[1:]))


@pytest.mark.parametrize("name", AUDIO_CORRUPTIONS)
def test_snr_determinism_and_keys(name):
    clean = speech_like()
    outs = [corrupt_audio(clean, name, s, seed=4, sample_ids=[5, 6, 7]) for s in SEVERITIES]
    for s, out in zip(SEVERITIES, outs):
        assert out.dtype == np.float32 and out.shape == clean.shape
        np.testing.assert_allclose(snr_db(clean, out), SNR_DB[s - 1], atol=0.5)
    # More damage at every step up in severity, for every clip.
    err = np.stack([np.mean((o - clean) ** 2, axis=1) for o in outs])
    assert np.all(np.diff(err, axis=0) > 0)
    # Deterministic and batch-independent; seeds and ids change the noise.
    assert np.array_equal(corrupt_audio(clean, name, 3, seed=4, sample_ids=[5, 6, 7]), outs[2])
    assert np.array_equal(corrupt_audio(clean[1:], name, 3, seed=4, sample_ids=[6, 7]), outs[2][1:])
    other_seed = corrupt_audio(clean, name, 3, seed=5, sample_ids=[5, 6, 7])
    other_ids = corrupt_audio(clean, name, 3, seed=4, sample_ids=[8, 6, 7])
    assert not np.allclose(other_seed, outs[2]) and not np.allclose(other_ids[0], outs[2][0])
    # The same ids in one batch get the same noise; different ids different noise.
    twice = corrupt_audio(np.stack([clean[0], clean[0]]), name, 3, sample_ids=[1, 1])
    assert np.array_equal(twice[0], twice[1])
    pair = corrupt_audio(np.stack([clean[0], clean[0]]), name, 3, sample_ids=[1, 2])
    assert not np.allclose(pair[0], pair[1])


def test_default_ids_and_clean_power_scaling():
    clean = speech_like(2)
    out = corrupt_audio(clean, "rain", 2)
    assert np.array_equal(out, corrupt_audio(clean, "rain", 2, seed=0, sample_ids=[0, 1]))
    # The noise follows each clip's own power: a 10x louder clip gets 10x the noise.
    loud = corrupt_audio(clean * np.float32(10), "rain", 2)
    np.testing.assert_allclose(loud - 10 * clean, 10 * (out - clean), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", ["traffic", "thunder"])
def test_low_frequency_noises(name):
    assert np.all(band_fraction(noises(name, 0.25), 0, 300) > 0.9)
    assert np.all(band_fraction(noises("gaussian_noise", 0.25), 0, 300) < 0.1)  # the measure


def test_rain_is_high_frequency():
    assert np.all(band_fraction(noises("rain", 0.25), 2000, SR) > 0.9)
    assert np.all(band_fraction(noises("traffic", 0.25), 2000, SR) < 0.1)


def test_thunder_is_bursty():
    def loudest_fifth_share(x):
        """Share of the clip's energy in its loudest 20% of 25 ms frames (0.2: stationary)."""
        energy = np.sort(frame_rms(x) ** 2, -1)[:, ::-1]
        return energy[:, : energy.shape[-1] // 5].sum(-1) / energy.sum(-1)

    thunder = loudest_fifth_share(noises("thunder", 1.0))
    traffic = loudest_fifth_share(noises("traffic", 1.0))
    assert np.mean(thunder) > 0.6 and np.mean(thunder) > np.mean(traffic) + 0.2
    assert np.all(loudest_fifth_share(noises("gaussian_noise", 1.0)) < 0.25)


def test_crowd_has_syllable_rhythm_in_the_speech_band():
    crowd = noises("crowd", 1.0)
    assert np.all(syllable_modulation(crowd) > 0.7)
    assert np.all(syllable_modulation(noises("gaussian_noise", 1.0)) < 0.6)
    assert np.all(band_fraction(crowd, 100, 4000) > 0.9)


def test_wind_is_band_limited_gusty_and_wandering():
    wind, white = noises("wind", 1.0), noises("gaussian_noise", 1.0)
    assert np.all(band_fraction(wind, 100, 2000) > 0.9)
    cv = lambda x: frame_rms(x).std(-1) / frame_rms(x).mean(-1)  # noqa: E731
    assert np.all(cv(wind) > 0.2) and np.all(cv(white) < 0.1)
    # Its spectral centroid wanders: much more than that of a stationary band of noise.
    band = scipy.signal.butter(2, (250, 800), "bandpass", fs=SR, output="sos")
    steady = scipy.signal.sosfilt(band, np.random.default_rng(7).standard_normal(white.shape))
    assert np.all(centroid_wander(wind) > 0.15) and np.all(centroid_wander(steady) < 0.1)


def test_errors():
    clean = speech_like(2)
    with pytest.raises(ValueError, match="unknown audio corruption 'hail'"):
        corrupt_audio(clean, "hail", 1)
    with pytest.raises(ValueError, match="severity must be in 1..5"):
        corrupt_audio(clean, "wind", 0)
    with pytest.raises(TypeError, match="severity"):
        corrupt_audio(clean, "wind", "3")
    with pytest.raises(ValueError, match=r"\(N, S\)"):
        corrupt_audio(clean[0], "wind", 1)
    with pytest.raises(TypeError, match="float"):
        corrupt_audio((clean * 1000).astype(np.int16), "wind", 1)
    bad = clean.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        corrupt_audio(bad, "wind", 1)
    silent = clean.copy()
    silent[1] = 0
    with pytest.raises(ValueError, match=r"clip\(s\) \[1\] are silent"):
        corrupt_audio(silent, "wind", 1)
    with pytest.raises(ValueError, match="one per clip"):
        corrupt_audio(clean, "wind", 1, sample_ids=[0])
    with pytest.raises(ValueError, match="sample_rate"):
        corrupt_audio(clean, "wind", 1, sample_rate=4000)
