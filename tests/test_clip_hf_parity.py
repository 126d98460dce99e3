"""The Flax CLIP against transformers' torch CLIPModel: a tiny random model saved with
save_pretrained and loaded by rest_jax gives the same embeddings and LayerNorm gradients."""

from __future__ import annotations

import json
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import tiny_text_config, tiny_vision_config

from rest_jax.models import (
    CLIP_IMAGE_ADAPT_RULES,
    CLIP_TEXT_ADAPT_RULES,
    ClipConfig,
    ClipModel,
    image_encoder,
    load_clip,
    load_tokenizer,
    text_encoder,
    vit_b16,
)
from rest_jax.models.hf import expected_hf_shapes, weight_specs
from rest_jax.numerics import l2_normalize
from rest_jax.selection import select

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

EOS, BOS, PAD = 99, 98, 0
TAU = 0.05
_LAYER_NORM_WEIGHT = re.compile(r"(layer_?norm\d?|layrnorm)\.weight$")


def tiny_config(eos_token_id: int = EOS) -> ClipConfig:
    # Different widths per tower and both activations, so the mapping and act are exercised.
    return ClipConfig(
        vision=tiny_vision_config(hidden_act="quick_gelu"),
        text=tiny_text_config(
            hidden_act="gelu", bos_token_id=BOS, eos_token_id=eos_token_id, pad_token_id=PAD
        ),
        projection_dim=16,
    )


def randomize_(model, seed: int) -> None:
    """Every weight redrawn from a seeded generator; LayerNorm scales near 1, not exactly 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "logit_scale":
                continue
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1.0 + 0.1 * noise if _LAYER_NORM_WEIGHT.search(name) else 0.1 * noise)


def inputs(n_images: int, n_texts: int, seed: int, with_eos: bool = True):
    rng = np.random.default_rng(seed)
    pixels = rng.normal(size=(n_images, 3, 32, 32)).astype(np.float32)
    ids = rng.integers(1, 97, size=(n_texts, 16))
    if with_eos:
        ids[:, 0] = BOS
        ends = rng.integers(2, 16, size=n_texts)
        ends[0] = 15  # one sequence uses the whole context
        for row, end in enumerate(ends):
            ids[row, end] = EOS
            ids[row, end + 1 :] = PAD
    return pixels, ids


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = tiny_config()
    model = transformers.CLIPModel(transformers.CLIPConfig(**config.to_hf_dict()))
    randomize_(model, seed=0)
    model.eval()
    directory = tmp_path_factory.mktemp("tiny_clip")
    model.save_pretrained(directory)
    assert (directory / "model.safetensors").is_file()
    return config, model, directory


def torch_features(model, pixels=None, ids=None):
    out = {}
    if pixels is not None:
        out["image"] = model.get_image_features(pixel_values=torch.from_numpy(pixels)).pooler_output
    if ids is not None:
        out["text"] = model.get_text_features(input_ids=torch.from_numpy(ids)).pooler_output
    return out


def test_config_json_and_legacy_dicts_match_transformers(checkpoint):
    config, _, directory = checkpoint
    assert ClipConfig.from_hf_dict(json.loads((directory / "config.json").read_text())) == config
    legacy = {
        "text_config": {"eos_token_id": 2, "hidden_size": 64, "num_attention_heads": 4},
        "text_config_dict": {"hidden_size": 48, "num_attention_heads": 4},
        "vision_config": {"patch_size": 16},
    }
    ours = ClipConfig.from_hf_dict(legacy)
    theirs = transformers.CLIPConfig(**legacy)
    for name in ("eos_token_id", "hidden_size", "num_attention_heads"):
        assert getattr(ours.text, name) == getattr(theirs.text_config, name), name
    assert ours.vision.patch_size == theirs.vision_config.patch_size


def test_embeddings_match_torch_float32(checkpoint):
    config, model, directory = checkpoint
    loaded_config, params, _ = load_clip(directory)
    pixels, ids = inputs(4, 6, seed=1)
    with torch.no_grad():
        expected = {k: v.numpy() for k, v in torch_features(model, pixels, ids).items()}
    images = jnp.asarray(pixels.transpose(0, 2, 3, 1))  # NCHW -> NHWC
    texts = jnp.asarray(ids, jnp.int32)
    features = {
        "image": jax.jit(image_encoder(loaded_config))(params["vision"], images),
        "text": jax.jit(text_encoder(loaded_config))(params["text"], texts),
    }
    for key in ("image", "text"):
        np.testing.assert_allclose(features[key], expected[key], atol=1e-5, rtol=1e-5)
        normalised = expected[key] / np.linalg.norm(expected[key], axis=-1, keepdims=True)
        np.testing.assert_allclose(l2_normalize(features[key]), normalised, atol=1e-5)


def test_legacy_eos_pooling_matches_torch(checkpoint):
    config, model, directory = checkpoint
    _, params, _ = load_clip(directory)
    # No bos/eos: argmax pooling lands mid-sequence, first-eos pooling at position 0.
    _, ids = inputs(0, 5, seed=2, with_eos=False)
    legacy = tiny_config(eos_token_id=2)
    model.text_model.eos_token_id = 2
    try:
        with torch.no_grad():
            expected = torch_features(model, ids=ids)["text"].numpy()
    finally:
        model.text_model.eos_token_id = EOS
    got = jax.jit(text_encoder(legacy))(params["text"], jnp.asarray(ids, jnp.int32))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    first_eos = jax.jit(text_encoder(config))(params["text"], jnp.asarray(ids, jnp.int32))
    assert not np.allclose(first_eos, expected, atol=1e-3)


def torch_entropy_loss(image, text):
    """Mean row and column entropy of softmax(I T^T / tau): a label-free loss of both towers."""
    logits = image @ text.T / TAU
    total = 0.0
    for axis in (1, 0):
        log_p = torch.log_softmax(logits, dim=axis)
        total = total - (log_p.exp() * log_p).sum(axis).mean()
    return total


def jax_entropy_loss(image, text):
    """The same loss in JAX."""
    logits = image @ text.T / TAU
    total = 0.0
    for axis in (1, 0):
        log_p = jax.nn.log_softmax(logits, axis=axis)
        total = total - jnp.mean(jnp.sum(jnp.exp(log_p) * log_p, axis=axis))
    return total


def test_layernorm_gradients_match_torch(checkpoint):
    config, model, directory = checkpoint
    _, params, _ = load_clip(directory)
    pixels, ids = inputs(6, 6, seed=3)

    model.zero_grad()
    emb = torch_features(model, pixels, ids)
    image = torch.nn.functional.normalize(emb["image"], dim=-1)
    text = torch.nn.functional.normalize(emb["text"], dim=-1)
    torch_loss = torch_entropy_loss(image, text)
    torch_loss.backward()
    torch_grads = {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}

    clip = ClipModel(config)
    images, texts = jnp.asarray(pixels.transpose(0, 2, 3, 1)), jnp.asarray(ids, jnp.int32)

    def loss(p):
        e = clip.embed(p, images=images, texts=texts)
        return jax_entropy_loss(e["image"], e["text"])

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    np.testing.assert_allclose(value, torch_loss.item(), rtol=1e-5)

    hf_name = {"/".join(s.path): s.hf_name for s in weight_specs(config)}
    for tower, rules, n_tensors in (
        ("vision", CLIP_IMAGE_ADAPT_RULES, 2 * (2 + 2 * 2)),
        ("text", CLIP_TEXT_ADAPT_RULES, 2 * 2 * 2),
    ):
        selection = select(grads[tower], rules)
        assert len(selection.paths) == n_tensors
        for path, _ in selection.paths:
            leaf = grads[tower]
            for key in path.split("/"):
                leaf = leaf[key]
            want = torch_grads[hf_name[f"{tower}/{path}"]]
            assert np.linalg.norm(want) > 0, path
            relative = np.linalg.norm(np.asarray(leaf) - want) / np.linalg.norm(want)
            assert relative < 1e-4, (tower, path, relative)


def test_pytorch_bin_loads_like_safetensors(checkpoint, tmp_path):
    config, model, directory = checkpoint
    shutil.copy(directory / "config.json", tmp_path / "config.json")
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    _, from_bin, _ = load_clip(tmp_path)
    _, from_safetensors, _ = load_clip(directory)
    jax.tree.map(np.testing.assert_array_equal, from_bin, from_safetensors)


def test_vit_b16_matches_hf_parameter_count_and_names():
    config = vit_b16()
    with torch.device("meta"):
        model = transformers.CLIPModel(transformers.CLIPConfig(**config.to_hf_dict()))
    hf_state = {name: tuple(p.shape) for name, p in model.named_parameters()}
    hf_count = sum(p.numel() for p in model.parameters())  # position_ids are buffers: not counted
    assert all("position_ids" not in name for name in hf_state)
    shapes = jax.eval_shape(ClipModel(config).init, jax.random.key(0))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == hf_count
    assert expected_hf_shapes(config) == hf_state
    assert select(shapes["vision"], CLIP_IMAGE_ADAPT_RULES).size == 39_936
    assert select(shapes["text"], CLIP_TEXT_ADAPT_RULES).size == 24_576


def test_tokenizer_backends_match_transformers(tmp_path):
    pytest.importorskip("tokenizers")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in letters + [f"{c}</w>" for c in letters] + ["do", "dog</w>", "ca", "cat</w>"]:
        vocab[token] = len(vocab)
    merges = [("d", "o"), ("do", "g</w>"), ("c", "a"), ("ca", "t</w>")]
    reference = transformers.CLIPTokenizer(vocab=vocab, merges=merges)
    reference.save_pretrained(tmp_path)
    texts = ["a dog", "the cat sat on a dog and a cat again"]
    expected = reference(texts, padding="max_length", truncation=True, max_length=8)["input_ids"]
    assert expected[1][-1] == vocab["<|endoftext|>"]  # truncation keeps the end token
    for backend in ("tokenizers", "transformers"):
        ids = load_tokenizer(tmp_path, context_length=8, backend=backend)(texts)
        np.testing.assert_array_equal(ids, expected, err_msg=backend)
