"""The shipped source model: its files match their pinned hashes, load, and retrieve."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from toy import tiny_text_config, tiny_vision_config

from experiments import training
from rest_jax import pretrained
from rest_jax.data.subword import SubwordTokenizer
from rest_jax.models import ClipConfig, ClipModel


def test_shipped_model_matches_its_hashes_and_loads():
    assert set(pretrained.WORLD_SOURCE_SHA256) == set(pretrained.WORLD_SOURCE_FILES)
    for name, digest in pretrained.WORLD_SOURCE_SHA256.items():
        assert pretrained.file_sha256(pretrained.WORLD_SOURCE_DIR / name) == digest, name
    size = (pretrained.WORLD_SOURCE_DIR / "model.safetensors").stat().st_size
    assert size <= 20 * 2**20
    source = pretrained.load_world_source()
    record = source.training
    assert record["validation_clean_r1"]["i2t"] > 0 and record["command"]
    assert source.config.text.vocab_size == source.tokenizer.vocab_size
    n = sum(np.size(x) for x in jax.tree.leaves(source.params))
    assert n * 4 <= size  # every parameter is stored (float32)


def tiny_source(tmp_path):
    tokenizer = SubwordTokenizer.train(["a red circle", "a blue square left of a star"], 120)
    text = tiny_text_config(
        vocab_size=tokenizer.vocab_size, max_position_embeddings=12, bos_token_id=2, eos_token_id=1
    )
    config = ClipConfig(vision=tiny_vision_config(image_size=16), text=text, projection_dim=16)
    params = jax.tree.map(np.asarray, training.init_params(ClipModel(config), 0))
    hashes = pretrained.save_world_source(tmp_path, config, params, tokenizer, {"note": "tiny"})
    return config, params, hashes


def test_save_and_load_round_trip_and_tampering_is_named(tmp_path):
    config, params, hashes = tiny_source(tmp_path)
    loaded = pretrained.load_world_source(tmp_path, hashes)
    assert loaded.config == config and loaded.training == {"note": "tiny"}
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    record = json.loads((tmp_path / "training.json").read_text())
    (tmp_path / "training.json").write_text(json.dumps({**record, "note": "edited"}))
    with pytest.raises(ValueError, match="training.json does not match its pinned SHA-256"):
        pretrained.load_world_source(tmp_path, hashes)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        pretrained.load_world_source(tmp_path)
