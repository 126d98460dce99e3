"""The audio-visual two-tower: shapes, normalisation, inputs, adapted set, save and load."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import tiny_av_config

from experiments import training
from rest_jax import pretrained
from rest_jax.data.audio_features import log_mel
from rest_jax.models import (
    AUDIO_ADAPT_RULES,
    VIDEO_ADAPT_RULES,
    AudioConfig,
    AudioVisualModel,
    AVConfig,
    VideoConfig,
    audio_encoder,
    audio_inputs,
    video_encoder,
    video_inputs,
)
from rest_jax.numerics import l2_normalize
from rest_jax.selection import select

TINY = tiny_av_config()  # 2 frames of 8 px; 0.1 s -> 8 log-mel frames of 16 bins


@pytest.fixture(scope="module")
def tiny():
    model = AudioVisualModel(TINY)
    params = jax.tree.map(np.asarray, training.init_params(model, 0))  # no Flax init compile
    return model, params


def clips(n=3, seed=0):
    rng = np.random.default_rng(seed)
    videos = rng.integers(0, 256, (n, 2, 8, 8, 3), dtype=np.uint8)
    return videos, rng.normal(0, 0.1, (n, 1600)).astype(np.float32)


def test_embeddings_are_normalised_and_match_the_functional_encoders(tiny):
    model, params = tiny
    videos, waves = clips()
    v, a = video_inputs(videos), audio_inputs(waves, 16000, TINY)

    @jax.jit  # one compilation for all four
    def embed(params, v, a):
        fv = video_encoder(TINY)(params["video"], v)
        fa = audio_encoder(TINY)(params["audio"], a)
        return model.encode_video(params, v), model.encode_audio(params, a), fv, fa

    ev, ea, fv, fa = embed(params, v, a)
    assert ev.shape == ea.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(ev, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ea, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(l2_normalize(fv), ev, atol=1e-6)
    np.testing.assert_allclose(l2_normalize(fa), ea, atol=1e-6)
    assert not np.allclose(ev[0], ev[1])  # different clips, different embeddings
    assert set(params) == {"video", "audio", "logit_scale"}


def test_inputs_are_normalised_with_fixed_constants_and_checked():
    videos, waves = clips()
    v = video_inputs(videos)
    assert v.dtype == np.float32 and v.shape == videos.shape
    np.testing.assert_allclose(v, (videos / 255.0 - 0.5) / 0.25, atol=1e-6)
    a = audio_inputs(waves, 16000, TINY)
    np.testing.assert_allclose(a, (log_mel(waves, 16000, 16) + 5.0) / 3.0, atol=1e-5)
    with pytest.raises(ValueError, match="8000 Hz but the model expects 16000"):
        audio_inputs(waves, 8000, TINY)
    with pytest.raises(ValueError, match="uint8"):
        video_inputs(v)
    assert video_inputs(videos, TINY).shape == videos.shape
    with pytest.raises(ValueError, match="3 frames of 8x8 px; the video tower takes 2 frames"):
        video_inputs(np.concatenate([videos, videos[:, :1]], axis=1), TINY)
    for bad, problem in ((waves[:, :1000], "samples"), (np.zeros_like(waves), "silent")):
        with pytest.raises(ValueError, match=problem):
            audio_inputs(bad, 16000, TINY)


def test_config_round_trip_and_checks():
    assert AVConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    with pytest.raises(ValueError, match="give 8 log-mel frames, not time_frames 10"):
        AudioConfig(mel_bins=16, time_frames=10, patch_size=(5, 8), num_samples=1600)
    with pytest.raises(ValueError, match="image_size 10"):
        VideoConfig(image_size=10, patch_size=4)


def test_adapted_sets_are_the_query_towers_layernorms(tiny):
    _, params = tiny
    video = [p for p, _ in select(params["video"], VIDEO_ADAPT_RULES).paths]
    norms = ["ln_pre", "blocks_0/ln_1", "blocks_0/ln_2", "ln_frame"]
    norms += ["temporal_blocks_0/ln_1", "temporal_blocks_0/ln_2", "ln_post"]
    assert sorted(video) == sorted(f"{n}/{w}" for n in norms for w in ("scale", "bias"))
    audio = [p for p, _ in select(params["audio"], AUDIO_ADAPT_RULES).paths]
    norms = ["ln_pre", "blocks_0/ln_1", "blocks_0/ln_2", "ln_post"]
    assert sorted(audio) == sorted(f"{n}/{w}" for n in norms for w in ("scale", "bias"))
    # On the whole tree, each rule set takes its own tower only.
    whole = select(params, VIDEO_ADAPT_RULES).paths
    assert len(whole) == 14 and all(p.startswith("video/") for p, _ in whole)
    assert select(params, AUDIO_ADAPT_RULES).size == 8 * 16


def test_save_and_load_round_trip_and_tampering_is_named(tiny, tmp_path):
    _, params = tiny
    hashes = pretrained.save_av_source(tmp_path, TINY, params, {"note": "tiny"})
    loaded = pretrained.load_av_source(tmp_path, hashes)
    assert loaded.config == TINY and loaded.training == {"note": "tiny"}
    jax.tree.map(np.testing.assert_array_equal, loaded.params, params)
    (tmp_path / "training.json").write_text(json.dumps({"note": "edited"}))
    with pytest.raises(ValueError, match="training.json does not match its pinned SHA-256"):
        pretrained.load_av_source(tmp_path, hashes)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="experiments.train_av_source"):
        pretrained.load_av_source(tmp_path)


def test_towers_reject_wrong_shapes(tiny):
    model, params = tiny
    with pytest.raises(ValueError, match="videos must be"):
        model.encode_video(params, jnp.zeros((1, 3, 8, 8, 3)))
    with pytest.raises(ValueError, match="log-mel inputs must be"):
        model.encode_audio(params, jnp.zeros((1, 8, 12)))


def test_shipped_av_source_matches_its_hashes_and_loads():
    assert set(pretrained.AV_SOURCE_SHA256) == set(pretrained.AV_SOURCE_FILES)
    for name, digest in pretrained.AV_SOURCE_SHA256.items():
        assert pretrained.file_sha256(pretrained.AV_SOURCE_DIR / name) == digest, name
    size = (pretrained.AV_SOURCE_DIR / "model.safetensors").stat().st_size
    assert size <= 20 * 2**20
    source = pretrained.load_av_source()
    record = source.training
    assert source.config == AVConfig.from_dict(record["model"])
    assert min(record["validation_clean_r1"].values()) >= 60 and record["command"]
    assert min(record["test_clean_r1"].values()) >= 50
    n = sum(np.size(x) for x in jax.tree.leaves(source.params))
    assert n * 4 <= size  # every parameter is stored (float32)
