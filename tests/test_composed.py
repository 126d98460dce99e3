"""Composed image retrieval: the world's composed splits, the combiner, its adapted set and
the shipped combiner."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import tiny_text_config, tiny_vision_config

from experiments import training
from rest_jax import pretrained
from rest_jax.data.relevance import composed_relevance
from rest_jax.data.synthworld import (
    MODIFICATIONS,
    WorldConfig,
    composed_ceiling,
    generate_composed,
    generate_composed_split,
)
from rest_jax.models import ClipConfig, ClipModel
from rest_jax.models.combiner import (
    COMPOSED_ADAPT_RULES,
    Combiner,
    CombinerConfig,
    composed_encoder,
    init_combiner,
    zero_shot_composition,
)
from rest_jax.numerics import l2_normalize
from rest_jax.selection import select

WORLD = WorldConfig(image_size=16)


def test_composed_splits_are_deterministic_disjoint_and_cover_every_modification():
    splits = {s: generate_composed_split(WORLD, s, n=60) for s in ("train", "validation", "test")}
    again = generate_composed_split(WORLD, "test", n=60)
    np.testing.assert_array_equal(again["images"], splits["test"]["images"])
    assert again["modifications"] == splits["test"]["modifications"]
    for split in splits.values():
        assert set(split["modification_kind"].tolist()) == set(range(len(MODIFICATIONS)))
        assert len(split["images"]) == 2 * len(split["target_ids"])
        relevant = composed_relevance(split["target_ids"])
        assert relevant.shape == (60, 1) and (relevant[:, 0] >= 60).all()  # targets only
        # a target differs from its reference, and is nobody else's reference
        diff = np.abs(
            split["images"][split["target_ids"]].astype(int)
            - split["images"][split["reference_ids"]]
        )
        assert (diff.reshape(60, -1).max(axis=1) > 0).all()
    # independent streams: no reference image is shared between splits
    flat = {s: {d["images"][i].tobytes() for i in range(60)} for s, d in splits.items()}
    assert not flat["train"] & flat["test"] and not flat["validation"] & flat["test"]
    # the legacy generator keeps its own stream
    assert generate_composed(WORLD, 5)["modifications"] != splits["test"]["modifications"][:5]
    with pytest.raises(ValueError, match="unknown composed split 'dev'"):
        generate_composed_split(WORLD, "dev")


def test_ceiling_counts_gallery_images_of_the_same_content():
    split = generate_composed_split(WORLD, "validation", n=40)
    assert composed_ceiling(split) == 100.0  # distinct contents
    # make target 0 a copy of target 1's scene: both queries now have two candidates
    copy = dict(split)
    t0, t1 = split["target_ids"][:2]
    for key in [k for k in split if k.startswith(("object_", "background_", "n_objects"))]:
        copy[key] = split[key].copy()
        copy[key][t0] = split[key][t1]
    assert composed_ceiling(copy) == pytest.approx(100.0 * (38 + 0.5 + 0.5) / 40)


def tiny_clip():
    config = ClipConfig(
        vision=tiny_vision_config(image_size=16), text=tiny_text_config(), projection_dim=16
    )
    return config, jax.tree.map(np.asarray, training.init_params(ClipModel(config), 0))


def test_combiner_mixes_and_zero_shot_sums():
    config = CombinerConfig(dim=16, hidden=8)
    params = init_combiner(config, 0)
    rng = np.random.default_rng(0)
    i = l2_normalize(jnp.asarray(rng.standard_normal((5, 16)), jnp.float32))
    t = l2_normalize(jnp.asarray(rng.standard_normal((5, 16)), jnp.float32))
    apply = jax.jit(Combiner(config).apply)
    q = apply({"params": params}, i, t)
    assert q.shape == (5, 16)
    # with the mix's output zeroed, q is the gated mix lam * t + (1 - lam) * i, lam in (0, 1)
    quiet = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.zeros_like(x) if "mix_out" in str(p) else x, params
    )
    q0 = np.asarray(apply({"params": quiet}, i, t))
    lam = np.sum((q0 - np.asarray(i)) * np.asarray(t - i), 1) / np.sum(np.asarray(t - i) ** 2, 1)
    np.testing.assert_allclose(q0, np.asarray(i) + lam[:, None] * np.asarray(t - i), atol=1e-5)
    assert ((lam > 0) & (lam < 1)).all()
    np.testing.assert_allclose(
        zero_shot_composition(2 * i, 3 * t), np.asarray(i + t), rtol=1e-6, atol=1e-6
    )
    with pytest.raises(ValueError, match=r"must both be \(B, 16\)"):
        Combiner(config).apply({"params": params}, i[:, :8], t[:, :8])


def test_composed_encoder_and_its_adapted_set_are_pinned():
    clip_config, clip_params = tiny_clip()
    combiner = CombinerConfig(dim=16, hidden=8)
    params = {
        "vision": clip_params["vision"],
        "text": clip_params["text"],
        "combiner": init_combiner(combiner, 0),
    }
    selection = select(params, COMPOSED_ADAPT_RULES)
    paths = [p for p, _ in selection.paths]
    blocks = [f"blocks_{b}/ln_{k}/{w}" for b in (0, 1) for k in (1, 2) for w in ("bias", "scale")]
    assert paths == (
        ["combiner/ln/bias", "combiner/ln/scale"]
        + [f"text/{b}" for b in blocks]
        + [f"vision/{b}" for b in blocks]
        + [f"vision/{n}/{w}" for n in ("ln_post", "ln_pre") for w in ("bias", "scale")]
    )
    assert "text/final_layer_norm/scale" not in paths  # as for image-text text queries
    zero_shot = {k: params[k] for k in ("vision", "text")}
    assert not any(
        p.startswith("combiner") for p, _ in select(zero_shot, COMPOSED_ADAPT_RULES).paths
    )

    rng = np.random.default_rng(0)
    inputs = {
        "image": rng.standard_normal((3, 16, 16, 3)).astype(np.float32),
        "text": np.tile(np.array([98, 5, 6, 99] + [0] * 12, np.int32), (3, 1)),
    }
    combined = jax.jit(composed_encoder(clip_config, combiner))(params, inputs)
    summed = jax.jit(composed_encoder(clip_config))(zero_shot, inputs)
    model = ClipModel(clip_config)
    emb = jax.jit(model.embed)(clip_params, inputs["image"], inputs["text"])
    np.testing.assert_allclose(summed, emb["image"] + emb["text"], atol=1e-5)
    assert combined.shape == (3, 16) and not np.allclose(combined, summed)
    with pytest.raises(ValueError, match="'image' and 'text'"):
        composed_encoder(clip_config)(zero_shot, inputs["image"])
    with pytest.raises(ValueError, match="projection_dim"):
        composed_encoder(clip_config, CombinerConfig(dim=8))


def test_combiner_directory_round_trip_and_checks(tmp_path):
    config = CombinerConfig(dim=16, hidden=8)
    params = jax.tree.map(np.asarray, init_combiner(config, 3))
    hashes = pretrained.save_world_combiner(tmp_path, config, params, {"note": "tiny"})
    loaded = pretrained.load_world_combiner(tmp_path, hashes)
    assert loaded.config == config and loaded.training == {"note": "tiny"}
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    wider = dataclasses.replace(config, hidden=4)
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(wider)))
    with pytest.raises(ValueError, match="config.json does not match its pinned SHA-256"):
        pretrained.load_world_combiner(tmp_path, hashes)
    with pytest.raises(ValueError, match="does not fit"):
        pretrained.load_world_combiner(tmp_path)


def test_shipped_combiner_matches_its_hashes_and_fits_the_source_model():
    assert set(pretrained.WORLD_COMBINER_SHA256) == set(pretrained.WORLD_COMBINER_FILES)
    for name, digest in pretrained.WORLD_COMBINER_SHA256.items():
        assert pretrained.file_sha256(pretrained.WORLD_COMBINER_DIR / name) == digest, name
    assert (pretrained.WORLD_COMBINER_DIR / "model.safetensors").stat().st_size <= 2 * 2**20
    combiner = pretrained.load_world_combiner()
    source_config = ClipConfig.from_hf_dict(
        json.loads((pretrained.WORLD_SOURCE_DIR / "config.json").read_text())
    )
    assert combiner.config.dim == source_config.projection_dim
    record = combiner.training
    assert record["source_model"] == pretrained.WORLD_SOURCE_SHA256
    assert record["validation"]["combiner"]["r1"] > record["validation"]["zero-shot"]["r1"]
    assert record["train_seconds"] > 0 and record["final_loss"] > 0 and record["command"]
