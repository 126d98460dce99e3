"""CLIP two-tower model in Flax Linen, numerically equal to Hugging Face's ``CLIPModel``.

Both towers are pre-LayerNorm transformers (Radford et al., 2021):

- vision: ``x = [cls; patch_embed(image)] + pos_embed``, ``ln_pre``, blocks, ``ln_post`` on the
  class token, ``proj`` (no bias);
- text: ``x = token_embed(ids) + pos_embed``, causal blocks, ``ln_final``, the state at the
  end-of-text token, ``proj`` (no bias);
- block: ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))``.

LayerNorm follows PyTorch (two-pass variance, epsilon from the config) and always runs in float32,
as does the final L2 normalisation; ``dtype`` only sets the precision of the matmuls. The residual
stream is float32 unless ``residual_dtype`` says otherwise (``jnp.bfloat16`` halves the memory
traffic between blocks; each LayerNorm still computes in float32).

Parameter tree (plain nested dict)::

    {'vision': {'patch_embed', 'class_embedding', 'pos_embed', 'ln_pre', 'blocks_0'..,
                'ln_post', 'proj'},
     'text': {'token_embed', 'pos_embed', 'blocks_0'.., 'ln_final', 'proj'},
     'logit_scale'}
    blocks_i = {'ln_1', 'attn': {'q_proj', 'k_proj', 'v_proj', 'out_proj'}, 'ln_2',
                'mlp': {'fc1', 'fc2'}}

Each tower runs alone on its own subtree (:func:`image_encoder`, :func:`text_encoder`), which is
what test-time adaptation needs: the gallery tower is used once, the query tower is adapted.
Method: docs/method.md sections 0 (adapted parameters) and 8.4 (real data).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rest_jax.numerics import l2_normalize

Array = jax.Array
Dtype = Any
PyTree = Any

# TCR's adapted parameters (docs/method.md section 0): the LayerNorm affine parameters
# of the query tower. The optional prefix lets the rules apply to a tower's own subtree or to the
# full two-tower tree.
CLIP_IMAGE_ADAPT_RULES: tuple[tuple[str, bool], ...] = (
    (r"^(vision/)?(ln_pre|ln_post|blocks_\d+/ln_[12])/(scale|bias)$", True),
)
CLIP_TEXT_ADAPT_RULES: tuple[tuple[str, bool], ...] = (
    (r"^(text/)?blocks_\d+/ln_[12]/(scale|bias)$", True),
)

# Hugging Face activation names (transformers.activations.ACT2FN) we support.
_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}

# transformers keeps argmax pooling for configs written before eos_token_id was fixed (== 2).
_LEGACY_EOS_TOKEN_ID = 2


# ----------------------------------------------------------------------------- configuration


def _square(value: Any, name: str) -> int:
    """HF allows ``image_size``/``patch_size`` as ``[h, w]``; only square ones are supported."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{name} must be square, got {value}")
        value = value[0]
    return int(value)


def _check_tower(cfg: Any, kind: str) -> None:
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ValueError(
            f"{kind}: hidden_size {cfg.hidden_size} is not a multiple of "
            f"num_attention_heads {cfg.num_attention_heads}"
        )
    if cfg.hidden_act not in _ACTIVATIONS:
        raise ValueError(
            f"{kind}: unsupported hidden_act {cfg.hidden_act!r}; known: {sorted(_ACTIVATIONS)}"
        )


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """Vision tower hyper-parameters (Hugging Face ``CLIPVisionConfig`` names and defaults)."""

    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        _check_tower(self, "vision")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"vision: image_size {self.image_size} is not a multiple of "
                f"patch_size {self.patch_size}"
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Text tower hyper-parameters (Hugging Face ``CLIPTextConfig`` names and defaults)."""

    vocab_size: int = 49408
    max_position_embeddings: int = 77
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 1

    def __post_init__(self):
        _check_tower(self, "text")
        if not isinstance(self.eos_token_id, int):
            raise TypeError(f"text: eos_token_id must be one int, got {self.eos_token_id!r}")


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """Two-tower CLIP configuration.

    Attributes:
      vision: vision tower.
      text: text tower.
      projection_dim: size of the shared embedding space.
      logit_scale_init: initial log of the contrastive temperature's inverse.
    """

    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    projection_dim: int = 512
    logit_scale_init: float = 2.6592

    @classmethod
    def from_hf_dict(cls, config: Mapping[str, Any]) -> ClipConfig:
        """Builds the config from a Hugging Face ``config.json`` dict (``model_type`` "clip").

        Missing keys take ``CLIPConfig``'s defaults. Legacy ``text_config_dict`` /
        ``vision_config_dict`` entries are resolved as transformers 5 does: the legacy dict,
        completed with the sub-config defaults, overrides ``text_config`` / ``vision_config``.
        """
        if not isinstance(config, Mapping):
            raise TypeError(f"expected a dict from config.json, got {type(config).__name__}")
        model_type = config.get("model_type", "clip")
        if model_type != "clip":
            raise ValueError(f"expected a CLIP config (model_type 'clip'), got {model_type!r}")
        text = _resolve_sub_config(config, "text", TextConfig)
        vision = _resolve_sub_config(config, "vision", VisionConfig)
        vision["image_size"] = _square(vision["image_size"], "image_size")
        vision["patch_size"] = _square(vision["patch_size"], "patch_size")
        return cls(
            vision=VisionConfig(**vision),
            text=TextConfig(**text),
            projection_dim=int(config.get("projection_dim", 512)),
            logit_scale_init=float(config.get("logit_scale_init_value", 2.6592)),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``transformers.CLIPConfig(**d)`` keyword arguments for this configuration."""
        return {
            "text_config": dataclasses.asdict(self.text),
            "vision_config": dataclasses.asdict(self.vision),
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": self.logit_scale_init,
        }


def _resolve_sub_config(config: Mapping[str, Any], kind: str, sub_cls: type) -> dict[str, Any]:
    names = [f.name for f in dataclasses.fields(sub_cls)]
    defaults = dataclasses.asdict(sub_cls())
    merged = {**defaults, **(config.get(f"{kind}_config") or {})}
    legacy = config.get(f"{kind}_config_dict")
    if legacy is not None:
        merged.update({**defaults, **legacy})
    return {name: merged[name] for name in names}


def vit_b16() -> ClipConfig:
    """OpenAI CLIP ViT-B/16 at 224 px (``openai/clip-vit-base-patch16``)."""
    return ClipConfig(vision=VisionConfig(image_size=224, patch_size=16))


def vit_b32() -> ClipConfig:
    """OpenAI CLIP ViT-B/32 at 224 px (``openai/clip-vit-base-patch32``)."""
    return ClipConfig(vision=VisionConfig(image_size=224, patch_size=32))


# ----------------------------------------------------------------------------- modules


def contrastive_temperature(logit_scale: Array) -> Array:
    """CLIP's contrastive temperature from its learned log inverse temperature ``s``:
    ``tau = 1 / exp(clip(s, 0, log 100))`` (so ``tau`` lies in [0.01, 1])."""
    return 1.0 / jnp.exp(jnp.clip(logit_scale, 0.0, np.log(100.0)))


def eos_positions(token_ids: Array, eos_token_id: int) -> Array:
    """Index of the pooled (end-of-text) token of each sequence, as transformers 5 computes it.

    ``eos_token_id == 2`` (legacy configs, e.g. OpenAI's): position of the largest token id, which
    is the end-of-text token for OpenAI's vocabulary. Otherwise: first position equal to
    ``eos_token_id`` (0 when absent).
    """
    if eos_token_id == _LEGACY_EOS_TOKEN_ID:
        return jnp.argmax(token_ids, axis=-1)
    return jnp.argmax((token_ids == eos_token_id).astype(jnp.int32), axis=-1)


class LayerNorm(nn.Module):
    """PyTorch's LayerNorm in float32: ``(x - mean) / sqrt(var + eps) * scale + bias``.

    The variance is the two-pass ``mean((x - mean)^2)`` (Flax's default is the one-pass
    ``E[x^2] - E[x]^2`` with epsilon 1e-6).
    """

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        x = x.astype(jnp.float32)
        centred = x - jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
        y = centred * jax.lax.rsqrt(var + self.epsilon)
        return y * scale.astype(jnp.float32) + bias.astype(jnp.float32)


def _dense(features: int, name: str, dtype: Dtype, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(0.02),
        name=name,
    )


def pooled_rows(x: Array, position: int | Array) -> Array:
    """``(B, L, W) -> (B, 1, W)``: row ``position`` of each sequence (an int for all, or one
    index per sequence, shape ``(B,)``)."""
    if isinstance(position, int):
        return x[:, position : position + 1]
    return jnp.take_along_axis(x, position[:, None, None], axis=1)


# cuDNN's fused attention in jax 0.11 rejects odd sequence lengths in training ("Unsupported
# sequence length Q 197, KV 197" on an H100); a multiple of 8 also keeps rows aligned.
CUDNN_SEQ_MULTIPLE = 8


def padded_attention(
    q: Array, k: Array, v: Array, causal: bool, implementation: str | None, multiple: int = 1
) -> Array:
    """``jax.nn.dot_product_attention`` over ``(B, L, heads, d)`` with the sequence padded to
    a multiple of ``multiple``; returns the ``L`` real rows, the same numbers as unpadded.

    The padded keys are masked by ``key_value_seq_lengths = L``; the padded queries attend to
    the real keys (finite values, no all-masked softmax) and are dropped, so they receive no
    gradient.
    """
    length = q.shape[1]
    pad = -length % multiple
    lengths = None
    if pad:
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        q, k, v = (jnp.pad(t, widths) for t in (q, k, v))
        lengths = jnp.full((q.shape[0],), length, jnp.int32)
    out = jax.nn.dot_product_attention(
        q, k, v, is_causal=causal, key_value_seq_lengths=lengths, implementation=implementation
    )
    return out[:, :length]


class SelfAttention(nn.Module):
    """Multi-head self-attention via ``jax.nn.dot_product_attention`` (scale ``1/sqrt(d_head)``).

    ``__call__(x)`` maps ``(B, L, W)`` to ``(B, L, W)``. ``__call__(x, query_position=p)``
    computes only the output at position ``p`` of each sequence, ``(B, 1, W)``: that row's
    query against all keys (causal: keys ``0..p``), the same numbers as row ``p`` of the full
    output.
    """

    num_heads: int
    causal: bool = False
    dtype: Dtype = jnp.float32
    attention: str | None = None  # jax.nn.dot_product_attention's implementation

    @nn.compact
    def __call__(self, x: Array, query_position: int | Array | None = None) -> Array:
        batch, _, width = x.shape
        head_dim = width // self.num_heads

        def heads(name, rows):
            y = _dense(width, name, self.dtype)(rows)
            return y.reshape(batch, rows.shape[1], self.num_heads, head_dim)

        if query_position is None:
            q, k, v = heads("q_proj", x), heads("k_proj", x), heads("v_proj", x)
            # implementation None is XLA's attention (jax 0.10/0.11); "cudnn" is the fused GPU
            # kernel (bf16/fp16 only), which refuses ViT-B/16's 197 tokens: padded to 200.
            multiple = CUDNN_SEQ_MULTIPLE if self.attention == "cudnn" else 1
            out = padded_attention(q, k, v, self.causal, self.attention, multiple)
        else:
            q = heads("q_proj", pooled_rows(x, query_position))
            k, v = heads("k_proj", x), heads("v_proj", x)
            # One query per sequence: a causal one at position p sees keys 0..p. XLA's
            # attention (a fused kernel gains nothing on one query row).
            lengths = None
            if self.causal:
                lengths = jnp.broadcast_to(jnp.asarray(query_position, jnp.int32) + 1, (batch,))
            out = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths)
        return _dense(width, "out_proj", self.dtype)(out.reshape(batch, -1, width))


class Mlp(nn.Module):
    """``fc2(act(fc1(x)))``."""

    hidden: int
    activation: str
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        width = x.shape[-1]
        y = _dense(self.hidden, "fc1", self.dtype)(x)
        y = _ACTIVATIONS[self.activation](y)
        return _dense(width, "fc2", self.dtype)(y)


class EncoderBlock(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``; the residual
    stream ``x`` is kept in ``residual_dtype``.

    ``__call__(x, query_position=p)`` returns only row ``p`` of the block's output,
    ``(B, 1, W)`` (see :class:`SelfAttention`): what the last block needs when the tower pools
    one token.
    """

    num_heads: int
    mlp_hidden: int
    activation: str
    layer_norm_eps: float
    causal: bool = False
    dtype: Dtype = jnp.float32
    attention: str | None = None
    residual_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, query_position: int | Array | None = None) -> Array:
        x = x.astype(self.residual_dtype)
        y = LayerNorm(self.layer_norm_eps, name="ln_1")(x)
        attn = SelfAttention(self.num_heads, self.causal, self.dtype, self.attention, name="attn")
        update = attn(y, query_position).astype(self.residual_dtype)
        if query_position is not None:
            x = pooled_rows(x, query_position)
        x = x + update
        y = LayerNorm(self.layer_norm_eps, name="ln_2")(x)
        mlp = Mlp(self.mlp_hidden, self.activation, self.dtype, name="mlp")
        return x + mlp(y).astype(self.residual_dtype)


def _blocks(
    x: Array,
    cfg: Any,
    causal: bool,
    dtype: Dtype,
    attention: str | None,
    residual_dtype: Dtype,
    pooled_position: int | Array,
) -> Array:
    """The tower's blocks on ``(B, L, W)``, returning the last block's output at the pooled
    position only, ``(B, W)``.

    Only that row reaches the tower's output, so the last block computes the keys and values
    of every row and the query, attention output and MLP of the pooled row alone (XLA does not
    drop the unused rows itself). The pooled row's numbers are those of the full block.
    """
    blocks = [
        EncoderBlock(
            num_heads=cfg.num_attention_heads,
            mlp_hidden=cfg.intermediate_size,
            activation=cfg.hidden_act,
            layer_norm_eps=cfg.layer_norm_eps,
            causal=causal,
            dtype=dtype,
            attention=attention,
            residual_dtype=residual_dtype,
            name=f"blocks_{i}",
        )
        for i in range(cfg.num_hidden_layers)
    ]
    for block in blocks[:-1]:
        x = block(x)
    x = blocks[-1](x, pooled_position) if blocks else pooled_rows(x, pooled_position)
    return x[:, 0]


class VisionTower(nn.Module):
    """CLIP image encoder: ``(B, H, W, C)`` preprocessed images -> ``(B, projection_dim)``."""

    config: VisionConfig
    projection_dim: int
    dtype: Dtype = jnp.float32
    attention: str | None = None
    residual_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: Array) -> Array:
        cfg = self.config
        expected = (cfg.image_size, cfg.image_size, cfg.num_channels)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape (batch, {', '.join(map(str, expected))}) (NHWC), "
                f"got {tuple(images.shape)}"
            )
        width, patch = cfg.hidden_size, cfg.patch_size
        x = nn.Conv(
            width,
            (patch, patch),
            strides=(patch, patch),
            padding="VALID",
            use_bias=False,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="patch_embed",
        )(images)
        x = x.reshape(x.shape[0], -1, width).astype(jnp.float32)
        init = nn.initializers.normal(width**-0.5)
        cls = self.param("class_embedding", init, (width,), jnp.float32)
        pos = self.param("pos_embed", init, (cfg.num_patches + 1, width), jnp.float32)
        cls = jnp.broadcast_to(cls.astype(jnp.float32), (x.shape[0], 1, width))
        x = jnp.concatenate([cls, x], axis=1) + pos.astype(jnp.float32)
        x = LayerNorm(cfg.layer_norm_eps, name="ln_pre")(x)
        # The class token (position 0) is pooled.
        x = _blocks(x, cfg, False, self.dtype, self.attention, self.residual_dtype, 0)
        pooled = LayerNorm(cfg.layer_norm_eps, name="ln_post")(x)
        out = _dense(self.projection_dim, "proj", self.dtype, use_bias=False)(pooled)
        return out.astype(jnp.float32)


class TextTower(nn.Module):
    """CLIP text encoder: ``(B, L)`` token ids -> ``(B, projection_dim)`` features.

    Attention is causal, so tokens after the pooled end-of-text token (padding) never reach the
    output and no padding mask is needed.
    """

    config: TextConfig
    projection_dim: int
    dtype: Dtype = jnp.float32
    attention: str | None = None
    residual_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, token_ids: Array) -> Array:
        cfg = self.config
        if token_ids.ndim != 2:
            raise ValueError(f"token ids must have shape (batch, length), got {token_ids.shape}")
        length = token_ids.shape[1]
        if length > cfg.max_position_embeddings:
            raise ValueError(
                f"token sequence length {length} exceeds max_position_embeddings "
                f"{cfg.max_position_embeddings}"
            )
        if not jnp.issubdtype(token_ids.dtype, jnp.integer):
            raise TypeError(f"token ids must be integers, got dtype {token_ids.dtype}")
        width = cfg.hidden_size
        x = nn.Embed(
            cfg.vocab_size,
            width,
            param_dtype=jnp.float32,
            embedding_init=nn.initializers.normal(0.02),
            name="token_embed",
        )(token_ids)
        pos = self.param(
            "pos_embed",
            nn.initializers.normal(0.01),
            (cfg.max_position_embeddings, width),
            jnp.float32,
        )
        x = x.astype(jnp.float32) + pos[:length].astype(jnp.float32)
        eos = eos_positions(token_ids, cfg.eos_token_id).astype(jnp.int32)
        x = _blocks(x, cfg, True, self.dtype, self.attention, self.residual_dtype, eos)
        pooled = LayerNorm(cfg.layer_norm_eps, name="ln_final")(x)
        out = _dense(self.projection_dim, "proj", self.dtype, use_bias=False)(pooled)
        return out.astype(jnp.float32)


class ClipTwoTower(nn.Module):
    """Both towers under one module (big_vision two-tower style).

    ``__call__(images=None, texts=None)`` returns ``{'image': (B, d), 'text': (B', d)}`` of
    L2-normalised embeddings for whichever inputs are given. ``logit_scale`` is created at
    init only, so applying one tower needs only that tower's subtree.
    """

    config: ClipConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: Array | None = None, texts: Array | None = None) -> dict:
        cfg = self.config
        if self.is_initializing():
            self.param("logit_scale", nn.initializers.constant(cfg.logit_scale_init), ())
        out = {}
        if images is not None:
            vision = VisionTower(cfg.vision, cfg.projection_dim, self.dtype, name="vision")
            out["image"] = l2_normalize(vision(images).astype(jnp.float32))
        if texts is not None:
            text = TextTower(cfg.text, cfg.projection_dim, self.dtype, name="text")
            out["text"] = l2_normalize(text(texts).astype(jnp.float32))
        return out


# ----------------------------------------------------------------------------- functional API


def image_encoder(
    config: ClipConfig,
    dtype: Dtype = jnp.float32,
    attention: str | None = None,
    residual_dtype: Dtype = jnp.float32,
) -> Callable[[PyTree, Array], Array]:
    """``apply_fn(vision_params, images) -> (B, projection_dim)`` unnormalised image features.

    Args:
      config: the model configuration.
      dtype: matmul precision (``jnp.bfloat16`` for bf16 compute; LayerNorm stays float32).
      attention: ``jax.nn.dot_product_attention``'s ``implementation`` (None or ``"xla"``:
        XLA; ``"cudnn"``: the fused GPU kernel, bf16/fp16 only).
      residual_dtype: dtype of the residual stream between blocks (float32: Hugging Face's
        numerics; ``jnp.bfloat16``: half the activation memory traffic).
    """
    tower = VisionTower(config.vision, config.projection_dim, dtype, attention, residual_dtype)
    return lambda params, images: tower.apply({"params": params}, images)


def text_encoder(
    config: ClipConfig,
    dtype: Dtype = jnp.float32,
    attention: str | None = None,
    residual_dtype: Dtype = jnp.float32,
) -> Callable[[PyTree, Array], Array]:
    """``apply_fn(text_params, token_ids) -> (B, projection_dim)`` unnormalised text features
    (``dtype``, ``attention`` and ``residual_dtype`` as in :func:`image_encoder`)."""
    tower = TextTower(config.text, config.projection_dim, dtype, attention, residual_dtype)
    return lambda params, token_ids: tower.apply({"params": params}, token_ids)


@dataclasses.dataclass(frozen=True)
class ClipModel:
    """Functional two-tower wrapper: ``init`` and ``embed`` over a plain params dict.

    Attributes:
      config: the model configuration.
      dtype: matmul precision (float32 default; ``jnp.bfloat16`` keeps LayerNorm and the final
        normalisation in float32).
    """

    config: ClipConfig
    dtype: Dtype = jnp.float32

    @property
    def module(self) -> ClipTwoTower:
        return ClipTwoTower(self.config, self.dtype)

    def dummy_inputs(self, batch: int = 1) -> tuple[Array, Array]:
        """Zero images ``(batch, S, S, C)`` and token ids ``(batch, max_position_embeddings)``."""
        v, t = self.config.vision, self.config.text
        images = jnp.zeros((batch, v.image_size, v.image_size, v.num_channels), jnp.float32)
        texts = jnp.zeros((batch, t.max_position_embeddings), jnp.int32)
        return images, texts

    def init(self, rng: Array) -> PyTree:
        """Random parameters ``{'vision', 'text', 'logit_scale'}``.

        Use ``jax.eval_shape(model.init, key)`` for shapes alone.
        """
        images, texts = self.dummy_inputs()
        return jax.jit(self.module.init)(rng, images, texts)["params"]

    def embed(
        self, params: PyTree, images: Array | None = None, texts: Array | None = None
    ) -> dict[str, Array]:
        """L2-normalised embeddings ``{'image': (B, d)}`` and/or ``{'text': (B', d)}``.

        ``params`` needs only the subtree of the tower(s) used.
        """
        if images is None and texts is None:
            raise ValueError("embed needs images, texts or both")
        return self.module.apply({"params": params}, images=images, texts=texts)

    def image_encoder(self) -> Callable[[PyTree, Array], Array]:
        return image_encoder(self.config, self.dtype)

    def text_encoder(self) -> Callable[[PyTree, Array], Array]:
        return text_encoder(self.config, self.dtype)
