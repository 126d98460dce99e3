"""rest_jax.models without torch: the Flax CLIP, its parameter sets, loading, preprocessing and
gallery embedding. Parity with transformers lives in test_clip_hf_parity.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import tiny_text_config, tiny_vision_config

from rest_jax.models import (
    CLIP_IMAGE_ADAPT_RULES,
    CLIP_TEXT_ADAPT_RULES,
    CheckpointMismatchError,
    ClipConfig,
    ClipModel,
    LayerNorm,
    PreprocessInfo,
    TextConfig,
    VisionConfig,
    embed_gallery,
    eos_positions,
    flax_to_hf,
    image_encoder,
    load_clip,
    load_preprocess_info,
    load_tokenizer,
    normalize_caption,
    preprocess_images,
    read_state_dict,
    resolve_checkpoint,
    text_encoder,
    vit_b16,
)
from rest_jax.models import clip as clip_lib
from rest_jax.numerics import l2_normalize
from rest_jax.selection import combine, partition, select

EOS = 99


def tiny_config(**text_overrides) -> ClipConfig:
    return ClipConfig(
        vision=tiny_vision_config(),
        text=tiny_text_config(**{"eos_token_id": EOS, **text_overrides}),
        projection_dim=16,
    )


def random_inputs(config: ClipConfig, n_images: int, n_texts: int, seed: int = 0):
    """Gaussian images and token ids ``[bos, words..., eos, pad...]`` of varied lengths."""
    rng = np.random.default_rng(seed)
    v, t = config.vision, config.text
    images = rng.normal(size=(n_images, v.image_size, v.image_size, v.num_channels))
    length = t.max_position_embeddings
    ids = rng.integers(1, 98, size=(n_texts, length))
    ids[:, 0] = t.bos_token_id
    for row, eos_at in enumerate(rng.integers(2, length, size=n_texts)):
        ids[row, eos_at] = t.eos_token_id
        ids[row, eos_at + 1 :] = t.pad_token_id
    return jnp.asarray(images, jnp.float32), jnp.asarray(ids, jnp.int32)


def random_params(config: ClipConfig, seed: int = 0):
    """Random weights in the shapes of ``ClipModel.init`` (compiling that init costs seconds):
    LayerNorm scales near 1, biases and weights small."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(ClipModel(config).init, jax.random.key(0))

    def draw(path, leaf):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        noise = rng.normal(size=leaf.shape)
        if name.endswith("/scale"):
            return jnp.asarray(1.0 + 0.1 * noise, jnp.float32)
        if name == "logit_scale":
            return jnp.asarray(config.logit_scale_init, jnp.float32)
        return jnp.asarray(0.1 * noise, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


class Tiny(NamedTuple):
    config: ClipConfig
    params: dict
    images: jax.Array  # (7, 32, 32, 3)
    texts: jax.Array  # (5, 16)
    image_fn: Callable  # image_encoder(config), one object so that jit caches hit
    encode_image: Callable  # jitted image_fn
    encode_text: Callable
    embed: Callable  # jitted ClipModel(config).embed


@pytest.fixture(scope="module")
def tiny() -> Tiny:
    config = tiny_config()
    images, texts = random_inputs(config, 7, 5)
    image_fn = image_encoder(config)
    return Tiny(
        config,
        random_params(config),
        images,
        texts,
        image_fn,
        jax.jit(image_fn),
        jax.jit(text_encoder(config)),
        jax.jit(ClipModel(config).embed),
    )


def n_params(tree) -> int:
    return sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------- config and tree


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="num_attention_heads"):
        VisionConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act"):
        TextConfig(hidden_act="swish_me")
    with pytest.raises(ValueError, match="patch_size"):
        VisionConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="square"):
        ClipConfig.from_hf_dict({"vision_config": {"image_size": [224, 160]}})
    with pytest.raises(ValueError, match="model_type"):
        ClipConfig.from_hf_dict({"model_type": "siglip"})


def test_from_hf_dict_roundtrip_and_legacy_dicts():
    config = tiny_config()
    hf = {"model_type": "clip", **config.to_hf_dict()}
    assert ClipConfig.from_hf_dict(json.loads(json.dumps(hf))) == config
    # transformers 5: a legacy text_config_dict, completed with defaults, overrides text_config.
    legacy = {"text_config": {"eos_token_id": 2, "hidden_size": 64}, "text_config_dict": {}}
    resolved = ClipConfig.from_hf_dict(legacy).text
    assert (resolved.eos_token_id, resolved.hidden_size) == (TextConfig().eos_token_id, 512)
    plain = ClipConfig.from_hf_dict({"text_config": {"eos_token_id": 2}})
    assert plain.text.eos_token_id == 2


def test_param_tree_names(tiny):
    config, params = tiny.config, tiny.params
    assert set(params) == {"vision", "text", "logit_scale"}
    assert set(params["vision"]) == {
        "patch_embed",
        "class_embedding",
        "pos_embed",
        "ln_pre",
        "blocks_0",
        "blocks_1",
        "ln_post",
        "proj",
    }
    assert set(params["text"]) == {
        "token_embed",
        "pos_embed",
        "blocks_0",
        "blocks_1",
        "ln_final",
        "proj",
    }
    block = params["text"]["blocks_1"]
    assert set(block) == {"ln_1", "attn", "ln_2", "mlp"}
    assert set(block["attn"]) == {"q_proj", "k_proj", "v_proj", "out_proj"}
    assert set(block["mlp"]) == {"fc1", "fc2"}
    assert params["vision"]["pos_embed"].shape == (config.vision.num_patches + 1, 32)
    assert params["text"]["proj"]["kernel"].shape == (24, 16)
    assert params["logit_scale"].shape == ()


def _block_size(width: int, hidden: int) -> int:
    attention = 4 * (width * width + width)
    mlp = width * hidden + hidden + hidden * width + width
    return attention + mlp + 2 * 2 * width


def test_vit_b16_parameter_count_and_adapted_sets():
    config = vit_b16()
    shapes = jax.eval_shape(ClipModel(config).init, jax.random.key(0))
    v, t, d = config.vision, config.text, config.projection_dim
    vision = (
        v.num_channels * v.patch_size**2 * v.hidden_size
        + (1 + v.num_patches + 1) * v.hidden_size
        + 2 * 2 * v.hidden_size
        + v.num_hidden_layers * _block_size(v.hidden_size, v.intermediate_size)
        + v.hidden_size * d
    )
    text = (
        (t.vocab_size + t.max_position_embeddings) * t.hidden_size
        + t.num_hidden_layers * _block_size(t.hidden_size, t.intermediate_size)
        + 2 * t.hidden_size
        + t.hidden_size * d
    )
    assert n_params(shapes) == vision + text + 1
    image_set = select(shapes["vision"], CLIP_IMAGE_ADAPT_RULES)
    text_set = select(shapes["text"], CLIP_TEXT_ADAPT_RULES)
    assert image_set.size == 39_936
    assert text_set.size == 24_576
    assert len(image_set.paths) == 2 * (2 + 2 * v.num_hidden_layers)
    assert not any("ln_final" in p for p, _ in text_set.paths)
    # Applied to the whole tree, each rule set stays inside its own tower.
    assert select(shapes, CLIP_IMAGE_ADAPT_RULES).paths == tuple(
        (f"vision/{p}", n) for p, n in image_set.paths
    )
    assert select(shapes, CLIP_TEXT_ADAPT_RULES).paths == tuple(
        (f"text/{p}", n) for p, n in text_set.paths
    )


# ----------------------------------------------------------------------------- numerics


def test_layernorm_is_two_pass_with_config_epsilon():
    rng = np.random.default_rng(1)
    x = (300 + rng.normal(scale=0.05, size=(4, 64))).astype(np.float32)
    scale = rng.normal(size=64).astype(np.float32)
    bias = rng.normal(size=64).astype(np.float32)
    variables = {"params": {"scale": scale, "bias": bias}}
    x64 = x.astype(np.float64)
    for eps in (1e-5, 1e-3):
        centred = x64 - x64.mean(-1, keepdims=True)
        expected = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + eps) * scale + bias
        got = LayerNorm(epsilon=eps).apply(variables, jnp.asarray(x))
        np.testing.assert_allclose(np.asarray(got), expected, atol=2e-3)
    # Flax's default (one-pass variance, epsilon 1e-6) is far off on such inputs.
    flax_default = nn.LayerNorm().apply(variables, jnp.asarray(x))
    assert np.max(np.abs(np.asarray(flax_default) - expected)) > 0.1


def test_embed_is_normalised_and_towers_work_alone(tiny):
    config, params, images, texts, embed = (
        tiny.config,
        tiny.params,
        tiny.images,
        tiny.texts,
        tiny.embed,
    )
    both = embed(params, images=images, texts=texts)
    assert set(both) == {"image", "text"}
    assert both["image"].shape == (7, 16) and both["text"].shape == (5, 16)
    for emb in both.values():
        np.testing.assert_allclose(np.linalg.norm(np.asarray(emb), axis=-1), 1.0, atol=1e-6)
    only_image = embed({"vision": params["vision"]}, images=images)
    assert set(only_image) == {"image"}
    np.testing.assert_allclose(only_image["image"], both["image"], atol=1e-6)
    features = tiny.encode_text(params["text"], texts)
    np.testing.assert_allclose(l2_normalize(features), both["text"], atol=1e-6)
    with pytest.raises(ValueError, match="images, texts"):
        ClipModel(config).embed(params)
    with pytest.raises(ValueError, match="NHWC"):
        image_encoder(config)(params["vision"], jnp.zeros((2, 3, 32, 32)))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        text_encoder(config)(params["text"], jnp.zeros((2, 17), jnp.int32))


def test_attention_implementation_is_passed_to_jax(tiny, monkeypatch):
    """``attention`` reaches jax.nn.dot_product_attention for every full-sequence attention;
    the last block's one pooled query row uses XLA's (None); "xla" equals the default."""
    params, images, texts = tiny.params, tiny.images, tiny.texts
    for encode, encoder, p, x in (
        (tiny.encode_image, image_encoder, "vision", images),
        (tiny.encode_text, text_encoder, "text", texts),
    ):
        xla = jax.jit(encoder(tiny.config, attention="xla"))
        np.testing.assert_array_equal(xla(params[p], x), encode(params[p], x))
    seen = []
    real = jax.nn.dot_product_attention

    def spy(*args, implementation=None, **kwargs):
        seen.append(implementation)
        return real(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    # Tracing calls the attention exactly as running would; no need to compile.
    jax.make_jaxpr(image_encoder(tiny.config, jnp.bfloat16, attention="cudnn"))(
        params["vision"], images
    )
    layers = tiny.config.vision.num_hidden_layers
    assert seen == ["cudnn"] * (layers - 1) + [None]


@pytest.mark.parametrize("causal", [False, True])
def test_pooled_block_row_equals_the_full_blocks_row(causal):
    """``EncoderBlock(x, query_position=p)`` (the last block of a tower) gives row ``p`` of
    the full block's output, with a position shared by all sequences (the vision class token)
    or one per sequence (the text end-of-text token, causal), and the same LayerNorm
    gradients through that row."""
    block = clip_lib.EncoderBlock(
        num_heads=4, mlp_hidden=64, activation="quick_gelu", layer_norm_eps=1e-5, causal=causal
    )
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 9, 32))
    params = jax.jit(block.init)(jax.random.PRNGKey(1), x)

    def rows_and_grads(f):
        """``f(params)`` and the gradient of ``sum(sin(f))`` wrt the params (one program)."""

        def loss(p):
            out = f(p)
            return jnp.sum(jnp.sin(out)), out

        grads, out = jax.jit(jax.grad(loss, has_aux=True))(params)
        return out, grads

    for position in (0, jnp.array([0, 4, 8], jnp.int32)):
        rows = np.arange(3), np.broadcast_to(np.asarray(position), (3,))

        def full(p, position=position, rows=rows):
            return block.apply(p, x)[rows]

        def pooled(p, position=position):
            return block.apply(p, x, query_position=position)[:, 0]

        (full_rows, full_grads), (pooled_rows, pooled_grads) = map(rows_and_grads, (full, pooled))
        np.testing.assert_allclose(pooled_rows, full_rows, rtol=1e-5, atol=1e-6)
        for name in ("ln_1", "ln_2"):
            np.testing.assert_allclose(
                pooled_grads["params"][name]["scale"],
                full_grads["params"][name]["scale"],
                atol=1e-5,
            )
    if causal:  # a later token must not reach an earlier pooled row
        pooled_at_4 = jax.jit(lambda p, x: block.apply(p, x, query_position=jnp.array([4, 4, 4])))
        moved = x.at[0, 5:].add(1.0)
        np.testing.assert_allclose(
            pooled_at_4(params, moved)[0], pooled_at_4(params, x)[0], atol=1e-6
        )


@pytest.mark.parametrize("causal", [False, True])
def test_padded_attention_equals_unpadded(causal):
    """The sequence padding used for cuDNN's kernel (197 -> 200 tokens for ViT-B/16) gives the
    unpadded attention's values and gradients; checked here through XLA's implementation,
    the same padding and masking the cuDNN call receives."""
    q, k, v = jax.random.normal(jax.random.PRNGKey(2), (3, 2, 13, 4, 8))
    assert clip_lib.CUDNN_SEQ_MULTIPLE == 8

    def plain(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal)

    def padded(q, k, v):
        return clip_lib.padded_attention(q, k, v, causal, None, clip_lib.CUDNN_SEQ_MULTIPLE)

    def values_and_grads(f):
        """``f(q, k, v)`` and the gradients of ``sum(sin(f))`` wrt q, k and v (one program)."""

        def loss(q, k, v):
            out = f(q, k, v)
            return jnp.sum(jnp.sin(out)), out

        grads, out = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
        return out, grads

    (out, grads), (out_plain, grads_plain) = values_and_grads(padded), values_and_grads(plain)
    assert out.shape == q.shape
    np.testing.assert_allclose(out, out_plain, rtol=1e-5, atol=1e-6)
    for wrt in range(3):
        assert bool(jnp.all(jnp.isfinite(grads[wrt])))
        np.testing.assert_allclose(grads[wrt], grads_plain[wrt], rtol=1e-4, atol=1e-5)


def test_text_pooling_and_causality(tiny):
    params, texts = tiny.params, tiny.texts
    ids = np.asarray(texts)
    np.testing.assert_array_equal(
        eos_positions(texts, EOS), [int(np.flatnonzero(row == EOS)[0]) for row in ids]
    )
    # Legacy configs (eos_token_id == 2) pool at the largest id.
    np.testing.assert_array_equal(eos_positions(texts, 2), ids.argmax(-1))
    encode = tiny.encode_text
    base = encode(params["text"], texts)
    row, eos_at = 0, int(np.flatnonzero(ids[0] == EOS)[0])
    after, before = ids.copy(), ids.copy()
    after[row, eos_at + 1 :] = 7  # tokens after the pooled one: invisible under the causal mask
    before[row, max(eos_at - 1, 1)] = 7 if ids[row, max(eos_at - 1, 1)] != 7 else 8
    np.testing.assert_allclose(encode(params["text"], jnp.asarray(after)), base, atol=1e-6)
    assert not np.allclose(encode(params["text"], jnp.asarray(before))[row], base[row], atol=1e-4)


def test_bf16_compute_keeps_layernorm_and_normalisation_in_float32(tiny):
    config, params, images, texts = tiny.config, tiny.params, tiny.images, tiny.texts
    f32 = tiny.embed(params, images=images, texts=texts)
    bf16_model = ClipModel(config, dtype=jnp.bfloat16)
    bf16 = jax.jit(bf16_model.embed)(params, images=images, texts=texts)
    for key in ("image", "text"):
        assert bf16[key].dtype == jnp.float32
        cosine = np.sum(np.asarray(bf16[key]) * np.asarray(f32[key]), axis=-1)
        assert np.all(cosine > 0.99), cosine
        assert not np.array_equal(np.asarray(bf16[key]), np.asarray(f32[key]))
    _, state = jax.eval_shape(  # dtypes alone: no need to compute
        lambda: bf16_model.module.apply(
            {"params": params},
            images=images,
            texts=texts,
            capture_intermediates=lambda mdl, _: isinstance(mdl, (LayerNorm, nn.Dense)),
        )
    )
    dtypes = {"ln": set(), "dense": set()}

    def collect(path, leaf):
        names = [getattr(k, "key", "") for k in path]
        kind = "ln" if any(str(n).startswith("ln_") for n in names) else "dense"
        dtypes[kind].add(leaf.dtype)

    jax.tree_util.tree_map_with_path(collect, state["intermediates"])
    assert dtypes["ln"] == {jnp.dtype(jnp.float32)}
    assert dtypes["dense"] == {jnp.dtype(jnp.bfloat16)}


def _matmuls(jaxpr):
    """The ``dot_general`` equations of a jaxpr, sub-jaxprs included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _matmuls(sub)


def _float32_matmuls(jaxpr) -> list:
    """``dot_general``s of a jaxpr (sub-jaxprs included) that would multiply in float32: a
    float32 operand without the BF16_BF16_F32 algorithm (which rounds inputs to bf16)."""
    found = []
    for eqn in _matmuls(jaxpr):
        dtypes = [str(v.aval.dtype) for v in eqn.invars]
        if "float32" in dtypes and str(eqn.params.get("precision")) != "BF16_BF16_F32":
            found.append((dtypes, [v.aval.shape for v in eqn.invars]))
    return found


def _query_tower(tiny, kind):
    """``(encoder factory, params subtree name, inputs, adaptation rules)`` of a tiny tower."""
    if kind == "image":
        return image_encoder, "vision", tiny.images, CLIP_IMAGE_ADAPT_RULES
    return text_encoder, "text", tiny.texts, CLIP_TEXT_ADAPT_RULES


@pytest.mark.parametrize("kind", ["image", "text"])
def test_only_the_pooled_row_reaches_the_last_blocks_mlp(tiny, kind):
    """The work the pooled last block saves, pinned: in the tower's forward and its LayerNorm
    gradient, the MLP's first matmul runs on every token in the other blocks and on one row
    per sequence in the last block."""
    encoder, tower, x, rules = _query_tower(tiny, kind)
    cfg, params = getattr(tiny.config, tower), tiny.params[tower]
    apply = encoder(tiny.config)
    tokens = cfg.num_patches + 1 if kind == "image" else x.shape[1]
    batch, layers = x.shape[0], cfg.num_hidden_layers

    def fc1_rows(jaxpr):
        return sorted(
            eqn.outvars[0].aval.shape[:-1]
            for eqn in _matmuls(jaxpr)
            if eqn.outvars[0].aval.shape[-1] == cfg.intermediate_size
        )

    forward = jax.make_jaxpr(apply)(params, x).jaxpr
    assert fc1_rows(forward) == [(batch, 1)] + [(batch, tokens)] * (layers - 1)
    ln_params, frozen = partition(params, select(params, rules).mask)
    grad = jax.make_jaxpr(jax.grad(lambda ln: jnp.sum(apply(combine(ln, frozen), x))))(ln_params)
    # The forward's fc1 plus the backward's through fc2 (its output has the MLP's width too).
    assert fc1_rows(grad.jaxpr) == [(batch, 1)] * 2 + [(batch, tokens)] * 2 * (layers - 1)


@pytest.mark.parametrize("kind", ["image", "text"])
def test_bf16_residual_stream(tiny, kind):
    """``residual_dtype=bf16``: bf16 between blocks; no float32 matmul in the forward or the
    LayerNorm-gradient backward (with either residual dtype); features and LayerNorm gradients
    close to the float32 residual's, and the gradients still float32."""
    encoder, tower, x, rules = _query_tower(tiny, kind)
    params = tiny.params[tower]
    adapted = select(params, rules)
    ln_params, frozen = partition(params, adapted.mask)

    def make_loss(residual_dtype):
        apply = encoder(tiny.config, jnp.bfloat16, residual_dtype=residual_dtype)
        return lambda ln: jnp.sum(jnp.sin(apply(combine(ln, frozen), x)))

    results = {}
    for name, residual_dtype in (("f32", jnp.float32), ("bf16", jnp.bfloat16)):
        loss = make_loss(residual_dtype)
        results[name] = jax.jit(jax.value_and_grad(loss))(ln_params)
        assert _float32_matmuls(jax.make_jaxpr(jax.grad(loss))(ln_params).jaxpr) == []
    (f32_value, f32_grad), (bf16_value, bf16_grad) = results["f32"], results["bf16"]
    assert bf16_value != f32_value
    np.testing.assert_allclose(bf16_value, f32_value, rtol=0.05)
    flat = [
        np.concatenate([np.ravel(v) for v in jax.tree.leaves(g)]) for g in (f32_grad, bf16_grad)
    ]
    cosine = flat[0] @ flat[1] / (np.linalg.norm(flat[0]) * np.linalg.norm(flat[1]))
    assert cosine > 0.98, cosine
    assert {leaf.dtype for leaf in jax.tree.leaves(bf16_grad)} == {jnp.dtype(jnp.float32)}

    tower_cls = clip_lib.VisionTower if kind == "image" else clip_lib.TextTower
    module = getattr(tiny.config, tower)
    module = tower_cls(module, tiny.config.projection_dim, jnp.bfloat16, None, jnp.bfloat16)
    _, state = jax.eval_shape(
        lambda: module.apply(
            {"params": params},
            x,
            capture_intermediates=lambda mdl, _: isinstance(mdl, clip_lib.EncoderBlock),
        )
    )
    block_dtypes = {leaf.dtype for leaf in jax.tree.leaves(state["intermediates"])}
    assert block_dtypes == {jnp.dtype(jnp.bfloat16)}


# ----------------------------------------------------------------------------- gallery


def test_gallery_pads_without_recompiling(tiny):
    params, gallery = tiny.params, tiny.images
    traces = []

    def counted(p, x):
        traces.append(x.shape)
        return tiny.image_fn(p, x)

    out = embed_gallery(counted, params["vision"], np.asarray(gallery), 3, show_progress=False)
    assert traces == [(3, 32, 32, 3)]  # 3 batches of 7 items, the last padded: traced once
    assert out.shape == (7, 16)
    np.testing.assert_allclose(
        out, l2_normalize(tiny.encode_image(params["vision"], gallery)), atol=1e-5
    )
    again = embed_gallery(
        counted, params["vision"], np.asarray(gallery[:5]), 3, show_progress=False
    )
    assert len(traces) == 1
    np.testing.assert_allclose(again, out[:5], atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        embed_gallery(counted, params["vision"], np.asarray(gallery), 0)


def test_gallery_with_host_transform(tiny):
    params = tiny.params
    rng = np.random.default_rng(2)
    raw = [rng.integers(0, 256, size=(40 + 3 * i, 36, 3), dtype=np.uint8) for i in range(7)]
    info = PreprocessInfo(image_size=32)
    out = embed_gallery(
        tiny.image_fn,
        params["vision"],
        raw,
        3,
        show_progress=False,
        transform=lambda chunk: preprocess_images(chunk, info),
    )
    expected = l2_normalize(
        tiny.encode_image(params["vision"], jnp.asarray(preprocess_images(raw, info)))
    )
    np.testing.assert_allclose(out, expected, atol=1e-5)


# ----------------------------------------------------------------------------- checkpoints


def write_checkpoint(directory, config, state):
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(
        json.dumps({"model_type": "clip", **config.to_hf_dict()})
    )
    save_file(
        {k: np.array(v, order="C") for k, v in state.items()}, str(directory / "model.safetensors")
    )
    return directory


def test_checkpoint_roundtrip(tiny, tmp_path):
    config, params = tiny.config, tiny.params
    state = flax_to_hf(params, config)
    assert state["vision_model.embeddings.patch_embedding.weight"].shape == (32, 3, 8, 8)
    assert state["text_projection.weight"].shape == (16, 24)
    state["text_model.embeddings.position_ids"] = np.arange(16)[None]  # old buffers are ignored
    directory = write_checkpoint(tmp_path / "ckpt", config, state)
    (directory / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "resample": 2})
    )
    loaded_config, loaded, info = load_clip(directory)
    assert loaded_config == config
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, loaded, params)
    assert info == PreprocessInfo(32, (0.5,) * 3, (0.25,) * 3, "bilinear")
    _, as_bf16, _ = load_clip(directory, dtype=jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(as_bf16)} == {jnp.dtype(jnp.bfloat16)}


def test_checkpoint_mismatch_lists_every_problem(tiny, tmp_path):
    config, params = tiny.config, tiny.params
    state = flax_to_hf(params, config)
    del state["text_model.final_layer_norm.bias"]
    del state["vision_model.encoder.layers.1.mlp.fc2.weight"]
    state["vision_model.embeddings.class_embedding"] = np.zeros(31, np.float32)
    state["visual_projection.bias"] = np.zeros(16, np.float32)
    directory = write_checkpoint(tmp_path / "bad", config, state)
    with pytest.raises(CheckpointMismatchError) as err:
        load_clip(directory)
    message = str(err.value)
    assert "missing (2)" in message and "unexpected (1)" in message and "mis-shaped (1)" in message
    for name in (
        "text_model.final_layer_norm.bias",
        "vision_model.encoder.layers.1.mlp.fc2.weight",
        "visual_projection.bias",
        "vision_model.embeddings.class_embedding: checkpoint (31,), expected (32,)",
    ):
        assert name in message
    assert isinstance(err.value, ValueError)


def test_missing_files_and_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_state_dict(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_clip(tmp_path)
    assert resolve_checkpoint(tmp_path) == tmp_path
    with pytest.raises(ValueError, match="clip-vit-b16"):
        resolve_checkpoint("no-such-model")
    pytest.importorskip("huggingface_hub")
    with pytest.raises(FileNotFoundError, match="allow_download"):
        resolve_checkpoint("clip-vit-b16", cache_dir=tmp_path / "empty_cache")


@pytest.mark.parametrize("backend", ["auto", "transformers"])
def test_checkpoint_without_tokenizer_files_is_an_error_naming_them(tiny, tmp_path, backend):
    # config.json and model.safetensors only: transformers would build a 2-token tokenizer.
    directory = write_checkpoint(
        tmp_path / "ckpt", tiny.config, flax_to_hf(tiny.params, tiny.config)
    )
    load_clip(directory)  # the weights load
    with pytest.raises(FileNotFoundError) as err:
        load_tokenizer(directory, context_length=16, backend=backend)
    message = str(err.value)
    for part in (str(directory), "tokenizer.json", "vocab.json", "merges.txt", "save_pretrained"):
        assert part in message, part


def test_damaged_checkpoint_files_are_errors_naming_the_file(tiny, tmp_path):
    state = flax_to_hf(tiny.params, tiny.config)
    directory = write_checkpoint(tmp_path / "ckpt", tiny.config, state)
    weights = directory / "model.safetensors"
    intact = weights.read_bytes()
    for size in (5, len(intact) // 2):  # a header cut short, data cut short
        weights.write_bytes(intact[:size])
        with pytest.raises(ValueError, match=rf"{weights}: cannot read the weights"):
            load_clip(directory)
    weights.write_bytes(intact)
    config = directory / "config.json"
    text = config.read_text()
    config.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"{config}: not valid JSON"):
        load_clip(directory)
    config.write_text(json.dumps({"text_config": {"hidden_size": "wide"}}))
    with pytest.raises(ValueError, match=rf"{config}: not a CLIP configuration"):
        load_clip(directory)
    config.write_text(text)
    processor = directory / "preprocessor_config.json"
    processor.write_text('{"image_mean": [0.5, 0.5')
    with pytest.raises(ValueError, match=rf"{processor}: not valid JSON"):
        load_clip(directory)
    processor.unlink()
    weights.unlink()
    index = directory / "model.safetensors.index.json"
    index.write_text('{"weight_map": {')
    with pytest.raises(ValueError, match=rf"{index}: not valid JSON"):
        load_clip(directory)


# ----------------------------------------------------------------------------- preprocessing


def test_preprocess_info_defaults_and_file(tmp_path):
    assert load_preprocess_info(tmp_path, 224) == PreprocessInfo(224)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"resample": 9}))
    with pytest.raises(ValueError, match="resample"):
        load_preprocess_info(tmp_path, 224)


def test_preprocess_images_backends_agree():
    rng = np.random.default_rng(3)
    info = PreprocessInfo(image_size=24)
    # Smooth images (upsampled noise), so both bicubic resamplers see the same content.
    coarse = rng.integers(0, 256, size=(2, 8, 8, 3)).astype(np.float32)
    smooth = np.clip(np.asarray(jax.image.resize(coarse, (2, 64, 48, 3), "linear")), 0, 255)
    images = smooth.round().astype(np.uint8)
    pil = preprocess_images(images, info, backend="pil")
    jx = np.asarray(preprocess_images(images, info, backend="jax"))
    assert pil.shape == jx.shape == (2, 24, 24, 3) and pil.dtype == np.float32
    level = 1 / 255 / min(info.std)  # one grey level after normalisation
    assert np.max(np.abs(pil - jx)) <= 2 * level
    # At the target size nothing is resampled: x = (pixels / 255 - mean) / std exactly.
    same = images[:, :24, :24]
    expected = (same / 255.0 - np.array(info.mean)) / np.array(info.std)
    np.testing.assert_allclose(preprocess_images(same, info), expected, atol=1e-5)
    grey = preprocess_images([same[0, ..., 0]], info)
    np.testing.assert_allclose(
        grey[0, ..., 0] * info.std[0] + info.mean[0], same[0, ..., 0] / 255.0, atol=1e-6
    )
    with pytest.raises(TypeError, match="uint8"):
        preprocess_images(images.astype(np.float32), info)
    with pytest.raises(ValueError, match="backend"):
        preprocess_images(images, info, backend="cv2")


def test_normalize_caption():
    assert (
        normalize_caption('A Dog; "running" (fast)!!  on the grass.')
        == "a dog running fast on the grass"
    )
    long = " ".join(f"w{i}" for i in range(40))
    assert normalize_caption(long) == " ".join(f"w{i}" for i in range(30))
    assert normalize_caption(long, max_words=3) == "w0 w1 w2"
    with pytest.raises(TypeError):
        normalize_caption(3)


def test_tokenizer_from_tokenizer_json(tmp_path):
    pytest.importorskip("tokenizers")
    from toy import write_word_level_tokenizer

    words = ["<|startoftext|>", "<|endoftext|>", "[UNK]", "a", "dog", "runs", "on", "grass"]
    write_word_level_tokenizer(tmp_path, words)
    tokenize = load_tokenizer(tmp_path, context_length=6)
    ids = tokenize(["a dog runs", "a dog runs on grass grass"])
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids[0], [0, 3, 4, 5, 1, 2])
    np.testing.assert_array_equal(ids[1], [0, 3, 4, 5, 6, 1])  # truncated, end token kept
    np.testing.assert_array_equal(eos_positions(jnp.asarray(ids), 1), [4, 5])
    np.testing.assert_array_equal(tokenize("grass"), [[0, 7, 1, 2, 2, 2]])
