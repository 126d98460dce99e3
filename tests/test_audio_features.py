"""Log-mel features against a direct computation, and every bad-input error of the checks."""

from __future__ import annotations

import numpy as np
import pytest

from rest_jax.data.audio_features import check_waveforms, log_mel, mel_filterbank


def tone(freq, seconds=0.2, rate=16000, amp=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_shape_and_a_frame_against_the_direct_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (2, 16000)).astype(np.float32)
    out = log_mel(x)
    assert out.shape == (2, 98, 128) and out.dtype == np.float32
    # Frame 7 of clip 1 by the formula: periodic Hann, |DFT_1024|^2, filterbank, log.
    n = np.arange(400)
    frame = x[1, 7 * 160 : 7 * 160 + 400] * (0.5 - 0.5 * np.cos(2 * np.pi * n / 400))
    k = np.arange(513)[:, None]
    dft = (frame[None] * np.exp(-2j * np.pi * k * n[None] / 1024)).sum(1)
    want = np.log(np.maximum(np.abs(dft) ** 2 @ mel_filterbank(128, 1024, 16000), 1e-10))
    np.testing.assert_allclose(out[1, 7], want, rtol=1e-4, atol=1e-4)


def test_tone_peaks_at_its_mel_bin_and_scaling_shifts_the_log():
    bank = mel_filterbank(128, 1024, 16000)
    assert (bank.sum(0) > 0).all()  # no empty filter
    freqs = np.fft.rfftfreq(1024, 1 / 16000)
    centre = freqs[bank.argmax(0)]
    for f in (300.0, 1000.0, 4000.0):
        peak = log_mel(tone(f)[None])[0].mean(0).argmax()
        assert abs(centre[peak] - f) < 0.06 * f + 20, (f, centre[peak])
    a, b = log_mel(tone(1000.0)[None]), log_mel(2 * tone(1000.0)[None])
    loud = a > a.max() - 12  # bins well above float32 rounding and the floor
    assert loud.sum() > 100
    np.testing.assert_allclose((b - a)[loud], np.log(4.0), atol=1e-3)


def test_check_waveforms_accepts_good_clips_and_names_each_bad_one():
    good = np.stack([tone(440, 0.1), tone(880, 0.1)])
    assert check_waveforms(good, 16000, 16000, 1600).dtype == np.float32
    cases = [
        (good, 8000, "8000 Hz but the model expects 16000 Hz"),
        (good[:, :1000], 16000, "1000 samples per clip, expected 1600"),
        (good[0], 16000, "must be 2-D"),
        ((good * 1000).astype(np.int16), 16000, "floating point"),
    ]
    for x, rate, match in cases:
        with pytest.raises(ValueError, match=match):
            check_waveforms(x, rate, 16000, 1600)
    for value, match in ((np.nan, "clip 1 holds NaN or inf"), (np.inf, "clip 1 holds NaN")):
        bad = good.copy()
        bad[1, 5] = value
        with pytest.raises(ValueError, match=match):
            check_waveforms(bad, 16000, 16000, 1600)
    for fill, match in ((0.0, "clip 1 is silent"), (0.3, "clip 1 is constant")):
        bad = good.copy()
        bad[1] = fill
        with pytest.raises(ValueError, match=match):
            check_waveforms(bad, 16000, 16000, 1600)
