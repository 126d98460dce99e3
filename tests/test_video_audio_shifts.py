"""Tests for experiments/tasks/video_audio_shifts.py: grids, spelling checks, application."""

import numpy as np
import pytest

from experiments.tasks import video_audio_shifts as vas
from experiments.tasks.base import check_spec_characters
from rest_jax.data.audio_corruptions import AUDIO_CORRUPTIONS, corrupt_audio
from rest_jax.data.video_corruptions import VIDEO_CORRUPTIONS, corrupt_videos


def data(n=2):
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, size=(n, 4, 8, 8, 3), dtype=np.uint8)
    waveforms = (0.1 * rng.standard_normal((n, 2000))).astype(np.float32)
    return videos, waveforms


def test_grids():
    v2a, a2v = vas.full_grid("v2a"), vas.full_grid("a2v")
    assert len(v2a) == 19 * 5 and len(a2v) == 6 * 5
    assert v2a[:2] == ["brightness@1", "brightness@2"] and "freeze@5" in v2a
    assert a2v[0] == "gaussian_noise@1" and "wind@5" in a2v
    assert {s.split("@")[0] for s in v2a} == set(VIDEO_CORRUPTIONS)
    assert {s.split("@")[0] for s in a2v} == set(AUDIO_CORRUPTIONS)
    for direction, grid in (("v2a", v2a), ("a2v", a2v)):
        for spec in grid:
            vas.check_shift(spec, direction)
            check_spec_characters(spec)
    with pytest.raises(ValueError, match="unknown direction 'i2t'"):
        vas.full_grid("i2t")


@pytest.mark.parametrize(
    "spec, direction, message",
    [
        ("rain@3", "v2a", r"unknown video corruption 'rain' \(an audio corruption: it shifts a2v"),
        ("fog@3", "a2v", r"unknown audio corruption 'fog' \(a video corruption: it shifts v2a"),
        ("freeze@3", "a2v", "known: gaussian_noise, traffic, crowd, rain, thunder, wind"),
        ("blur@2", "v2a", r"unknown video corruption 'blur'; known: brightness, .*freeze"),
        ("fog@6", "v2a", r"fog@6: the severity of a video corruption is an integer 1-5 \(fog@3\)"),
        ("fog", "v2a", "integer 1-5"),
        ("wind@0.5", "a2v", "the severity of an? audio corruption is an integer 1-5"),
        ("wind@0", "a2v", "integer 1-5"),
        ("fog@3", "t2i", "unknown direction 't2i'"),
    ],
)
def test_check_shift_errors(spec, direction, message):
    with pytest.raises(ValueError, match=message):
        vas.check_shift(spec, direction)


def test_gaussian_noise_follows_direction_and_clean():
    assert vas.parse_shift("gaussian_noise@2", "v2a") == ("gaussian_noise", 2)
    assert vas.parse_shift("gaussian_noise@2", "a2v") == ("gaussian_noise", 2)
    assert vas.parse_shift("clean", "a2v") is None
    assert vas.describe("rain@3", "a2v") == "rain at 10 dB SNR"
    assert vas.describe("freeze@2", "v2a") == "freeze, severity 2"


def test_shift_queries():
    videos, waveforms = data()
    assert vas.shift_queries("v2a", "clean", videos, None, seed=0) is videos
    assert vas.shift_queries("a2v", "clean", None, waveforms, seed=0) is waveforms
    out = vas.shift_queries("v2a", "gaussian_noise@3", videos, waveforms, seed=2)
    assert np.array_equal(out, corrupt_videos(videos, "gaussian_noise", 3, seed=2))
    out = vas.shift_queries("v2a", "frame_jitter@5", videos, None, seed=2, sample_ids=[4, 9])
    assert np.array_equal(out, corrupt_videos(videos, "frame_jitter", 5, seed=2, sample_ids=[4, 9]))
    out = vas.shift_queries("a2v", "gaussian_noise@3", videos, waveforms, seed=2, sample_rate=8000)
    expected = corrupt_audio(waveforms, "gaussian_noise", 3, seed=2, sample_rate=8000)
    assert out.dtype == np.float32 and np.array_equal(out, expected)
    assert not np.array_equal(vas.shift_queries("a2v", "thunder@1", None, waveforms, seed=2), out)
    with pytest.raises(ValueError, match="v2a queries are the videos, got None"):
        vas.shift_queries("v2a", "fog@1", None, waveforms, seed=0)
    with pytest.raises(ValueError, match="a2v queries are the waveforms"):
        vas.shift_queries("a2v", "clean", videos, None, seed=0)
    with pytest.raises(ValueError, match="an audio corruption: it shifts a2v"):
        vas.shift_queries("v2a", "wind@1", videos, waveforms, seed=0)
