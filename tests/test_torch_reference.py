"""The eager PyTorch TCR step of experiments/torch_reference.py against rest_jax's ``tcr`` step.

The benchmark compares their speed, so they must do the same work: same scores batch after
batch, same adapted LayerNorm parameters, same adapted set. Checked tightly in float64 on a
tiny LayerNorm encoder (3 batches, bank and AdamW state carried over) and, within float32
tolerance, on a tiny random CLIP (2 batches, image and text queries).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import tiny_text_config, tiny_vision_config

import rest_jax
from rest_jax.models import (
    CLIP_IMAGE_ADAPT_RULES,
    CLIP_TEXT_ADAPT_RULES,
    ClipConfig,
    TextTower,
    VisionTower,
    image_encoder,
    text_encoder,
)
from rest_jax.models.hf import weight_specs

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
reference = pytest.importorskip("experiments.torch_reference")

BATCH, GALLERY = 8, 40


def unit_rows(rng, n, d, dtype):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


# ----------------------------------------------------------------------------- float64, tiny


def ln_encoder(params, x):
    """``LN(x W1) W2`` with a PyTorch LayerNorm (two-pass variance, eps 1e-5)."""
    h = x @ params["proj_in"]["kernel"]
    centred = h - h.mean(-1, keepdims=True)
    h = centred / jnp.sqrt(jnp.mean(centred**2, -1, keepdims=True) + 1e-5)
    h = h * params["norm"]["scale"] + params["norm"]["bias"]
    return h @ params["proj_out"]["kernel"]


def test_float64_tiny_encoder_matches_step_by_step(x64):
    rng = np.random.default_rng(0)
    d_in, hidden, dim = 6, 12, 5
    w1, w2 = rng.normal(size=(d_in, hidden)), rng.normal(size=(hidden, dim))
    scale, bias = 1 + 0.1 * rng.normal(size=hidden), 0.1 * rng.normal(size=hidden)
    gallery = unit_rows(rng, GALLERY, dim, np.float64)
    batches = [rng.normal(size=(BATCH, d_in)) for _ in range(3)]

    params = {
        "proj_in": {"kernel": jnp.asarray(w1)},
        "norm": {"scale": jnp.asarray(scale), "bias": jnp.asarray(bias)},
        "proj_out": {"kernel": jnp.asarray(w2)},
    }
    adapter = rest_jax.Adapter.create(ln_encoder, params, gallery, config=rest_jax.preset("tcr"))
    state = adapter.init_state()

    model = torch.nn.Sequential(
        torch.nn.Linear(d_in, hidden, bias=False),
        torch.nn.LayerNorm(hidden, eps=1e-5),
        torch.nn.Linear(hidden, dim, bias=False),
    ).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(w1.T))
        model[1].weight.copy_(torch.from_numpy(scale))
        model[1].bias.copy_(torch.from_numpy(bias))
        model[2].weight.copy_(torch.from_numpy(w2.T))
    for p in (model[0].weight, model[2].weight):
        p.requires_grad_(False)
    optimizer = reference.make_optimizer([model[1].weight, model[1].bias])
    bank = reference.AnchorBank(64, dim, dtype=torch.float64)
    g = torch.from_numpy(gallery)

    for index, x in enumerate(batches):
        state, out = adapter.step(state, {"inputs": jnp.asarray(x), "mask": np.ones(BATCH, bool)})
        scores, metrics = reference.tcr_step_torch(
            model, optimizer, bank, torch.from_numpy(x), g, batch_index=index
        )
        np.testing.assert_allclose(np.asarray(out.scores), scores.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(
            np.asarray(out.metrics["loss"][-1]), metrics["loss"].item(), rtol=1e-9
        )
        assert int(out.metrics["num_reliable"][-1]) == int(metrics["num_reliable"])
        adapted = adapter.params(state)["norm"]
        for name, theirs in (("scale", model[1].weight), ("bias", model[1].bias)):
            np.testing.assert_allclose(
                np.asarray(adapted[name]), theirs.detach().numpy(), rtol=1e-9, atol=1e-12
            )
    # The bank holds the same reliable pairs.
    jax_bank = state.method_state
    order = np.argsort(np.asarray(jax_bank.score)[np.asarray(jax_bank.valid)])
    np.testing.assert_allclose(
        np.asarray(jax_bank.score)[np.asarray(jax_bank.valid)][order],
        np.sort(bank.score.numpy()),
        rtol=1e-9,
    )
    # Adaptation moved the LayerNorm (the comparison is not between two unchanged models).
    assert np.abs(np.asarray(adapter.params(state)["norm"]["scale"]) - scale).max() > 1e-4


# ----------------------------------------------------------------------------- float32, CLIP


def tiny_clip() -> ClipConfig:
    return ClipConfig(
        vision=tiny_vision_config(16),
        text=tiny_text_config(
            vocab_size=64,
            max_position_embeddings=12,
            hidden_size=32,
            intermediate_size=64,
            bos_token_id=62,
            eos_token_id=63,
        ),
        projection_dim=16,
    )


def random_inputs(rng, cfg: ClipConfig, modality: str, n: int) -> np.ndarray:
    if modality == "image":
        size = cfg.vision.image_size
        return rng.normal(size=(n, size, size, 3)).astype(np.float32)
    length = cfg.text.max_position_embeddings
    ids = rng.integers(1, cfg.text.vocab_size - 2, size=(n, length))
    ids[:, 0] = cfg.text.bos_token_id
    ids[np.arange(n), rng.integers(3, length, size=n)] = cfg.text.eos_token_id
    return ids.astype(np.int32)


def tower_params(cfg: ClipConfig, modality: str, seed: int):
    """Random Flax parameters of one tower, LayerNorm scales and biases moved off 1 and 0."""
    if modality == "image":
        module = VisionTower(cfg.vision, cfg.projection_dim)
        size = cfg.vision.image_size
        dummy = jnp.zeros((1, size, size, 3), jnp.float32)
    else:
        module = TextTower(cfg.text, cfg.projection_dim)
        dummy = jnp.zeros((1, cfg.text.max_position_embeddings), jnp.int32)
    params = jax.jit(module.init)(jax.random.PRNGKey(seed), dummy)["params"]
    rng = np.random.default_rng(seed)

    def perturb(path, x):
        if "ln_" not in jax.tree_util.keystr(path):
            return x
        return x + 0.2 * rng.normal(size=x.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(perturb, params)


def tower_to_hf(params, cfg: ClipConfig, tower: str) -> dict[str, np.ndarray]:
    """One tower's Flax parameters as Hugging Face tensors (the library's name mapping)."""
    out = {}
    for spec in weight_specs(cfg):
        if spec.path[0] != tower:
            continue
        value = params
        for key in spec.path[1:]:
            value = value[key]
        value = np.asarray(value)
        if spec.perm is not None:
            value = np.transpose(value, np.argsort(spec.perm))
        out[spec.hf_name] = np.array(value, order="C")  # a writable copy
    return out


@pytest.mark.parametrize("modality", ["image", "text"])
def test_float32_tiny_clip_agrees_with_rest_jax(modality):
    cfg = tiny_clip()
    tower, rules, encoder = {
        "image": ("vision", CLIP_IMAGE_ADAPT_RULES, image_encoder(cfg)),
        "text": ("text", CLIP_TEXT_ADAPT_RULES, text_encoder(cfg)),
    }[modality]
    params = tower_params(cfg, modality, seed=1)
    rng = np.random.default_rng(2)
    gallery = unit_rows(rng, GALLERY, cfg.projection_dim, np.float32)
    batches = [random_inputs(rng, cfg, modality, BATCH) for _ in range(2)]

    adapter = rest_jax.Adapter.create(
        encoder, params, gallery, config=rest_jax.preset("tcr"), rules=rules
    )
    state = adapter.init_state()

    model = reference.build_query_tower(cfg.to_hf_dict(), modality)
    start = tower_to_hf(params, cfg, tower)
    model.tower.load_state_dict({k: torch.from_numpy(v) for k, v in start.items()})
    adapted_params = reference.adapt_layernorms(model)
    optimizer = reference.make_optimizer(adapted_params)
    bank = reference.AnchorBank(64, cfg.projection_dim)
    g = torch.from_numpy(gallery)

    # Same adapted set on both sides (HF names of rest_jax's selected paths).
    hf_name = {"/".join(s.path[1:]): s.hf_name for s in weight_specs(cfg) if s.path[0] == tower}
    selected = {hf_name[path] for path, _ in adapter.selection.paths}
    trainable = {n for n, p in model.tower.named_parameters() if p.requires_grad}
    assert selected == trainable

    for index, x in enumerate(batches):
        state, out = adapter.step(state, {"inputs": x, "mask": np.ones(BATCH, bool)})
        if modality == "image":
            torch_inputs = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        else:
            torch_inputs = torch.from_numpy(x).long()
        scores, _ = reference.tcr_step_torch(
            model, optimizer, bank, torch_inputs, g, batch_index=index
        )
        np.testing.assert_allclose(np.asarray(out.scores), scores.numpy(), atol=5e-6)
        assert (np.asarray(out.scores).argmax(1) == scores.numpy().argmax(1)).all()

    ours = tower_to_hf(adapter.params(state), cfg, tower)
    theirs = model.tower.state_dict()
    moved = 0.0
    for name in sorted(trainable):
        # After 6 AdamW steps of lr 3e-4 the params moved by up to ~2e-3; they agree far
        # below that (a sign flip of one tiny gradient entry could cost one lr).
        np.testing.assert_allclose(ours[name], theirs[name].numpy(), atol=1e-5)
        moved = max(moved, float(np.abs(ours[name] - start[name]).max()))
    assert moved > 1e-3
