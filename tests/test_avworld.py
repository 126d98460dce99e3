"""AVWorld: determinism, split independence, audio-visual synchrony, the ceiling."""

from __future__ import annotations

import numpy as np
import pytest

from rest_jax.data.avworld import (
    AVWorldConfig,
    audible_signatures,
    gate,
    generate_av_split,
    recall_ceiling,
)

# A small, fast world: 4 frames of 16 px, 0.5 s at 4 kHz.
SMALL = AVWorldConfig(frames=4, image_size=16, sample_rate=4000, seconds=0.5, pixel_noise=0.0)


@pytest.fixture(scope="module")
def val():
    return generate_av_split(SMALL, "val", 0, num_clips=12)


def test_shapes_dtypes_and_default_sizes(val):
    assert val.videos.shape == (12, 4, 16, 16, 3) and val.videos.dtype == np.uint8
    assert val.waveforms.shape == (12, 2000) and val.waveforms.dtype == np.float32
    assert val.sample_rate == 4000 and len(val) == 12
    default = AVWorldConfig()
    assert [default.split_size(s) for s in ("train", "val", "test")] == [10_000, 500, 1_000]
    assert default.num_samples == 16_000 and default.frames == 8 and default.image_size == 32


def test_config_round_trip_and_checks():
    d = SMALL.to_dict()
    assert isinstance(d["loudness"], list)
    assert AVWorldConfig.from_dict(d) == SMALL
    with pytest.raises(ValueError, match="unknown AVWorldConfig keys"):
        AVWorldConfig.from_dict({**d, "colour": 1})
    with pytest.raises(ValueError, match="min_objects"):
        AVWorldConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="unknown split"):
        generate_av_split(SMALL, "validation", 0, num_clips=2)


def test_deterministic_and_splits_independent(val):
    again = generate_av_split(SMALL, "val", 0, num_clips=12)
    np.testing.assert_array_equal(again.videos, val.videos)
    np.testing.assert_array_equal(again.waveforms, val.waveforms)
    other_seed = generate_av_split(SMALL, "val", 1, num_clips=12)
    test = generate_av_split(SMALL, "test", 0, num_clips=12)
    train = generate_av_split(SMALL, "train", 0, num_clips=12)
    for other in (other_seed, test, train):
        assert not np.array_equal(other.waveforms, val.waveforms)
        assert not np.array_equal(other.scenes["start"], val.scenes["start"])


def test_objects_are_seen_and_heard_exactly_in_their_interval():
    world = AVWorldConfig(
        frames=4, image_size=16, sample_rate=4000, seconds=0.5, pixel_noise=0.0,
        ambient_level=1e-4, audio_noise=0.0, tremolo_depth=0.0, min_duration=1,
    )  # fmt: skip
    split = generate_av_split(world, "test", 0, num_clips=40)
    s = split.scenes
    t = np.arange(world.frames)
    active = (
        s["valid"][:, :, None] & (t >= s["onset"][:, :, None]) & (t < s["offset"][:, :, None])
    ).any(1)  # (N, T)
    assert active.any() and (~active).any()
    # Sound: RMS of each frame's middle half is large exactly when an object is active.
    per = world.num_samples // world.frames
    mid = split.waveforms.reshape(len(split), world.frames, per)[:, :, per // 4 : 3 * per // 4]
    rms = np.sqrt((mid**2).mean(-1))
    assert (rms[active] > 0.03).all() and (rms[~active] < 1e-3).all()
    # Image: frames without an active object are the bare background, all equal.
    for i in range(len(split)):
        quiet = np.flatnonzero(~active[i])
        for a in quiet[1:]:
            np.testing.assert_array_equal(split.videos[i, a], split.videos[i, quiet[0]])
        for a in np.flatnonzero(active[i]):
            if len(quiet):
                assert (split.videos[i, a] != split.videos[i, quiet[0]]).any()


def test_gate_is_one_inside_and_zero_outside():
    g = gate(SMALL, np.array([1]), np.array([3]))[0]
    t = np.arange(SMALL.num_samples) / SMALL.sample_rate
    frame = SMALL.seconds / SMALL.frames
    assert (g[(t < frame) | (t > 3 * frame)] == 0).all()
    inside = (t > frame + 0.006) & (t < 3 * frame - 0.006)
    assert (g[inside] == 1).all()


def test_ceiling_counts_clips_with_equal_audible_signatures(val):
    scenes = {k: np.concatenate([v[:2], v[:1]]) for k, v in val.scenes.items()}
    scenes["colour"] = np.random.default_rng(0).random(scenes["colour"].shape)  # seen only
    sigs = audible_signatures(scenes)
    assert sigs[0] == sigs[2] != sigs[1]
    want = 100.0 * (0.5 + 1.0 + 0.5) / 3
    assert recall_ceiling(scenes) == pytest.approx({"v2a": want, "a2v": want})
    assert val.ceiling == recall_ceiling(val.scenes)
    assert 0 < val.ceiling["v2a"] <= 100


def test_head_keeps_the_first_clips_and_their_ceiling(val):
    head = val.head(5)
    assert len(head) == 5 and head.scenes["kind"].shape[0] == 5
    np.testing.assert_array_equal(head.waveforms, val.waveforms[:5])
    assert head.ceiling == recall_ceiling({k: v[:5] for k, v in val.scenes.items()})
