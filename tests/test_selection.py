"""LAYERNORM_RULES on the encoders users bring: Linen (default and custom names), NNX, CLIP."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rest_jax import LAYERNORM_RULES, select
from rest_jax.models import (
    CLIP_IMAGE_ADAPT_RULES,
    CLIP_TEXT_ADAPT_RULES,
    ClipConfig,
    ClipModel,
    TextConfig,
    vit_b16,
)
from tests.toy import tiny_vision_config


def selected(tree) -> list[str]:
    return [path for path, _ in select(tree, LAYERNORM_RULES).paths]


class LinenDefaultNames(nn.Module):
    """Flax's automatic names: LayerNorm_0, RMSNorm_0 next to Dense_*, BatchNorm_0, GroupNorm_0."""

    @nn.compact
    def __call__(self, x):
        x = nn.LayerNorm()(nn.Dense(8)(x))
        x = nn.RMSNorm()(nn.Dense(8)(x))
        x = nn.BatchNorm(use_running_average=True)(x)
        x = nn.GroupNorm(num_groups=2)(x)
        return nn.Dense(4)(x)


def test_linen_default_names():
    variables = LinenDefaultNames().init(jax.random.key(0), jnp.ones((2, 3)))
    assert selected(variables["params"]) == [
        "LayerNorm_0/bias",
        "LayerNorm_0/scale",
        "RMSNorm_0/scale",
    ]
    # The full variables dict (params next to batch_stats) selects the same leaves.
    assert selected(variables) == [
        "params/LayerNorm_0/bias",
        "params/LayerNorm_0/scale",
        "params/RMSNorm_0/scale",
    ]


LAYERNORM_NAMES = (
    "ln",
    "ln_1",
    "ln_pre",
    "ln_f",
    "ln2",
    "final_ln",
    "norm",
    "norm1",
    "norm_out",
    "pre_norm",
    "encoder_norm",
    "layernorm",
    "LayerNorm",
    "layer_norm",
    "final_layer_norm",
    "layernorm_before",
    "input_layernorm",
    "post_attention_layernorm",
    "pre_layrnorm",  # Hugging Face's Flax CLIP spells it so
    "rms_norm",
)
OTHER_NAMES = (  # Dense layers whose names come close, and the other normalisations
    "Dense_0",
    "layers_1",
    "normal_head",
    "denorm",
    "kiln",
    "lnr",
    "out_proj",
)
OTHER_NORMS = ("bn", "batch_norm", "BatchNorm_1", "group_norm", "instance_norm")


class LinenCustomNames(nn.Module):
    @nn.compact
    def __call__(self, x):
        for name in LAYERNORM_NAMES:
            x = nn.LayerNorm(name=name)(x)
        for name in OTHER_NAMES:
            x = nn.Dense(x.shape[-1], name=name)(x)
        x = nn.BatchNorm(use_running_average=True, name="bn")(x)
        x = nn.BatchNorm(use_running_average=True, name="batch_norm")(x)
        x = nn.BatchNorm(use_running_average=True, name="BatchNorm_1")(x)
        x = nn.GroupNorm(num_groups=2, name="group_norm")(x)
        return nn.GroupNorm(num_groups=None, group_size=1, name="instance_norm")(x)


def test_linen_custom_names():
    params = LinenCustomNames().init(jax.random.key(0), jnp.ones((2, 4)))["params"]
    want = sorted(f"{name}/{leaf}" for name in LAYERNORM_NAMES for leaf in ("bias", "scale"))
    assert sorted(selected(params)) == want
    assert set(params) == set(LAYERNORM_NAMES + OTHER_NAMES + OTHER_NORMS)


class NnxBlock(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(8, rngs=rngs)
        self.fc = nnx.Linear(8, 8, rngs=rngs)
        self.ln_2 = nnx.RMSNorm(8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)


class NnxEncoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Linear(3, 8, rngs=rngs)
        self.blocks = nnx.List([NnxBlock(rngs) for _ in range(2)])
        self.final_layer_norm = nnx.LayerNorm(8, rngs=rngs)


def test_nnx_state_paths():
    _, state = nnx.split(NnxEncoder(nnx.Rngs(0)))
    assert selected(state) == [
        "blocks/0/ln_2/scale/value",
        "blocks/0/norm1/bias/value",
        "blocks/0/norm1/scale/value",
        "blocks/1/ln_2/scale/value",
        "blocks/1/norm1/bias/value",
        "blocks/1/norm1/scale/value",
        "final_layer_norm/bias/value",
        "final_layer_norm/scale/value",
    ]
    # Only Params: the BatchNorm's statistics and the RNG state are never selected.
    _, params, _ = nnx.split(NnxEncoder(nnx.Rngs(0)), nnx.Param, ...)
    assert selected(params) == selected(state)


def tiny_clip_shapes():
    config = ClipConfig(
        vision=tiny_vision_config(),
        text=TextConfig(
            vocab_size=50,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
        ),
        projection_dim=16,
    )
    return jax.eval_shape(ClipModel(config).init, jax.random.key(0))


def test_clip_towers():
    for shapes in (
        tiny_clip_shapes(),
        jax.eval_shape(ClipModel(vit_b16()).init, jax.random.key(0)),
    ):
        vision, text = shapes["vision"], shapes["text"]
        # Image tower: every LayerNorm is adapted, exactly TCR's set.
        assert select(vision, LAYERNORM_RULES).paths == select(vision, CLIP_IMAGE_ADAPT_RULES).paths
        # Text tower: TCR's set leaves ln_final out; the default rules take every LayerNorm.
        tcr = select(text, CLIP_TEXT_ADAPT_RULES).paths
        final = tuple(
            (f"ln_final/{leaf}", text["ln_final"][leaf].size) for leaf in ("bias", "scale")
        )
        assert dict(select(text, LAYERNORM_RULES).paths) == dict(tcr + final)
    assert select(vision, LAYERNORM_RULES).size == 39_936
    assert select(text, CLIP_TEXT_ADAPT_RULES).size == 24_576
    assert select(text, LAYERNORM_RULES).size == 24_576 + 2 * 512


def test_rules_need_the_affine_leaf():
    tree = {"LayerNorm_0": {"scale": np.ones(2), "bias": np.ones(2), "kernel": np.ones((2, 2))}}
    assert selected(tree) == ["LayerNorm_0/bias", "LayerNorm_0/scale"]
