"""Tests for rest_jax.data.video_corruptions: per-frame image corruptions with one draw per
clip, and the temporal corruptions (reorder / repeat a clip's own frames)."""

import numpy as np
import pytest

from rest_jax.data.image_corruptions import IMAGE_CORRUPTIONS, corrupt_images
from rest_jax.data.video_corruptions import (
    JITTER_FRAMES,
    TEMPORAL_CORRUPTIONS,
    VIDEO_CORRUPTIONS,
    corrupt_videos,
    frame_order,
)

# Image corruptions that draw no random numbers: seed and id must not matter for them.
DRAWLESS = ("brightness", "contrast", "defocus_blur", "jpeg_compression", "zoom_blur")


def clips(n: int = 2, t: int = 4, size: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` clips of ``t`` distinct frames: a moving bright square on a random background."""
    rng = np.random.default_rng(seed)
    out = rng.integers(40, 200, size=(n, t, size, size, 3), dtype=np.uint8)
    for k in range(t):
        out[:, k, k : k + 4, 2 * k : 2 * k + 4] = 250
    return out


def test_names():
    assert VIDEO_CORRUPTIONS == IMAGE_CORRUPTIONS + ("frame_drop", "frame_jitter", "freeze")
    assert len(VIDEO_CORRUPTIONS) == 19


@pytest.mark.parametrize("name", IMAGE_CORRUPTIONS)
def test_image_corruption_one_draw_per_clip(name):
    v = clips()
    # The same frame content everywhere: every frame of a clip must then come out identical.
    same = np.repeat(v[:, :1], 3, axis=1)
    out = corrupt_videos(same, name, 3, seed=5, sample_ids=[7, 8])
    assert out.shape == same.shape and out.dtype == np.uint8
    assert np.array_equal(out[:, 1], out[:, 0]) and np.array_equal(out[:, 2], out[:, 0])
    # Each frame is the image corruption of that frame with the clip's id.
    out = corrupt_videos(v, name, 3, seed=5, sample_ids=[7, 8])
    for n, clip_id in enumerate((7, 8)):
        expected = corrupt_images(v[n], name, 3, seed=5, sample_ids=[clip_id] * v.shape[1])
        assert np.array_equal(out[n], expected)
    assert not np.array_equal(out, v)
    # Deterministic, batch-independent.
    assert np.array_equal(corrupt_videos(v, name, 3, seed=5, sample_ids=[7, 8]), out)
    assert np.array_equal(corrupt_videos(v[1:], name, 3, seed=5, sample_ids=[8]), out[1:])
    if name not in DRAWLESS:
        assert not np.array_equal(corrupt_videos(v, name, 3, seed=6, sample_ids=[7, 8]), out)
        assert not np.array_equal(corrupt_videos(v, name, 3, seed=5, sample_ids=[9, 8])[0], out[0])


def _damage(v, out):
    return np.mean(np.abs(out.astype(np.float64) - v.astype(np.float64)))


@pytest.mark.parametrize("name", ["gaussian_noise", "motion_blur", "fog"])
def test_image_corruption_severity_monotone(name):
    v = clips(n=3)
    damage = [_damage(v, corrupt_videos(v, name, s, seed=1)) for s in range(1, 6)]
    assert all(a < b for a, b in zip(damage, damage[1:])), damage


@pytest.mark.parametrize("name", TEMPORAL_CORRUPTIONS)
def test_temporal_reorders_or_repeats_own_frames(name):
    v = clips(n=6, t=8, size=8)
    for s in range(1, 6):
        out = corrupt_videos(v, name, s, seed=3, sample_ids=np.arange(10, 16))
        for n in range(len(v)):
            order = frame_order(name, s, 8, seed=3, sample_id=10 + n)
            assert np.array_equal(out[n], v[n, order])
            if name == "frame_jitter":
                assert sorted(order.tolist()) == list(range(8))  # a permutation
                # Local: a frame passes another only if their jitters overlap.
                assert np.all(np.abs(order - np.arange(8)) < 2 * JITTER_FRAMES[s - 1])
            else:
                assert order[0] == 0 and np.all(np.diff(order) >= 0)  # time never goes back
                assert np.all(order <= np.arange(8))  # only earlier frames are repeated


def _displacement(name, s, t=8, clips_=200):
    orders = [frame_order(name, s, t, seed=0, sample_id=i) for i in range(clips_)]
    return np.mean([np.mean(o != np.arange(t)) + np.mean(np.abs(o - np.arange(t))) for o in orders])


@pytest.mark.parametrize("name", TEMPORAL_CORRUPTIONS)
def test_temporal_severity_monotone(name):
    damage = [_displacement(name, s) for s in range(1, 6)]
    assert damage[0] > 0
    assert all(a < b for a, b in zip(damage, damage[1:])), damage


def test_frame_drop_nested_across_severities():
    for i in range(20):
        dropped = [
            frame_order("frame_drop", s, 8, sample_id=i) != np.arange(8) for s in (1, 2, 3, 4, 5)
        ]
        for a, b in zip(dropped, dropped[1:]):
            assert np.all(b[a])  # a frame lost at severity s stays lost at s + 1


@pytest.mark.parametrize("name", TEMPORAL_CORRUPTIONS)
def test_temporal_deterministic_and_keyed(name):
    v = clips(n=4, t=8, size=4)
    out = corrupt_videos(v, name, 5, seed=2)
    assert np.array_equal(corrupt_videos(v, name, 5, seed=2), out)
    assert np.array_equal(corrupt_videos(v[2:], name, 5, seed=2, sample_ids=[2, 3]), out[2:])
    orders = {
        tuple(frame_order(name, 5, 8, seed=sd, sample_id=i)) for sd in (0, 1) for i in range(8)
    }
    assert len(orders) > 1  # seeds and ids change the draw


def test_short_clips():
    v = clips(n=2, t=1, size=4)
    for name in TEMPORAL_CORRUPTIONS:
        assert np.array_equal(corrupt_videos(v, name, 5), v)
    assert corrupt_videos(v[:0], "fog", 2).shape == (0, 1, 4, 4, 3)


def test_errors():
    v = clips(n=1, t=2, size=4)
    with pytest.raises(ValueError, match="unknown video corruption 'blur'"):
        corrupt_videos(v, "blur", 1)
    with pytest.raises(ValueError, match="severity must be in 1..5"):
        corrupt_videos(v, "freeze", 6)
    with pytest.raises(TypeError, match="severity"):
        corrupt_videos(v, "freeze", 2.0)
    with pytest.raises(TypeError, match="uint8"):
        corrupt_videos(v.astype(np.float32), "freeze", 1)
    with pytest.raises(ValueError, match=r"\(N, T, H, W, 3\)"):
        corrupt_videos(v[0], "freeze", 1)
    with pytest.raises(ValueError, match="one per clip"):
        corrupt_videos(v, "freeze", 1, sample_ids=[0, 1])
    with pytest.raises(ValueError, match="non-negative"):
        corrupt_videos(v, "freeze", 1, sample_ids=[-1])
    with pytest.raises(ValueError, match="temporal corruption"):
        frame_order("fog", 1, 4)
