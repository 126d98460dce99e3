"""Audio-visual two-tower model in Flax Linen: a video tower and an audio tower that embed clips
into one space, for video <-> audio retrieval (docs/method.md sections 0 and 8.5).

Both towers reuse CLIP's pre-LayerNorm blocks (``rest_jax.models.clip.EncoderBlock``,
``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))``) and its float32 LayerNorm:

- video (factorised space-time, as ViViT's factorised encoder, Arnab et al., ICCV 2021): each
  frame is a ViT, ``[cls; patch_embed(frame)] + pos_embed``, ``ln_pre``, ``blocks_i``; the
  frames' class tokens go through ``ln_frame``, get ``[temporal_class; .] + temporal_pos``,
  ``temporal_blocks_i`` mix them over time; ``ln_post`` on the temporal class token, ``proj``;
- audio (AST, Gong et al., Interspeech 2021): the normalised log-mel spectrogram ``(time, mel)``
  cut into non-overlapping ``(time, mel)`` patches, ``[cls; patch_embed] + pos_embed``,
  ``ln_pre``, ``blocks_i``, ``ln_post`` on the class token, ``proj``.

Parameter tree::

    {'video': {'patch_embed', 'class_embedding', 'pos_embed', 'ln_pre', 'blocks_0'..,
               'ln_frame', 'temporal_class', 'temporal_pos', 'temporal_blocks_0'..,
               'ln_post', 'proj'},
     'audio': {'patch_embed', 'class_embedding', 'pos_embed', 'ln_pre', 'blocks_0'..,
               'ln_post', 'proj'},
     'logit_scale'}

Each tower runs alone on its own subtree (:func:`video_encoder`, :func:`audio_encoder`), as
CLIP's do: the gallery tower is used once, the query tower is adapted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rest_jax.data.audio_features import check_waveforms, log_mel, num_frames
from rest_jax.models.clip import EncoderBlock, LayerNorm, contrastive_temperature
from rest_jax.numerics import l2_normalize

Array = jax.Array
PyTree = Any

# The query tower's LayerNorm affine parameters (docs/method.md section 0), with or without
# the tower's prefix, as CLIP_IMAGE_ADAPT_RULES.
VIDEO_ADAPT_RULES: tuple[tuple[str, bool], ...] = (
    (
        r"^(video/)?(ln_pre|ln_frame|ln_post|(blocks|temporal_blocks)_\d+/ln_[12])/(scale|bias)$",
        True,
    ),
)
AUDIO_ADAPT_RULES: tuple[tuple[str, bool], ...] = (
    (r"^(audio/)?(ln_pre|ln_post|blocks_\d+/ln_[12])/(scale|bias)$", True),
)

# uint8 frames -> ``(x / 255 - VIDEO_MEAN) / VIDEO_STD``.
VIDEO_MEAN = 0.5
VIDEO_STD = 0.25


@dataclasses.dataclass(frozen=True)
class VideoConfig:
    """Video tower: ``frames`` frames of ``image_size`` px, ``patch_size`` px patches, a
    spatial ViT of ``layers`` blocks then a temporal one of ``temporal_layers`` blocks."""

    frames: int = 8
    image_size: int = 32
    patch_size: int = 8
    width: int = 48
    layers: int = 1
    temporal_layers: int = 1
    heads: int = 4

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"video: image_size {self.image_size} % patch {self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"video: width {self.width} is not a multiple of heads {self.heads}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """Audio tower over ``(time_frames, mel_bins)`` log-mel spectrograms cut into
    ``patch_size = (time, mel)`` patches; the waveform side (``sample_rate``, ``num_samples``)
    and the fixed normalisation ``(x - mel_mean) / mel_std`` of :func:`audio_inputs`."""

    mel_bins: int = 128
    time_frames: int = 98
    patch_size: tuple[int, int] = (14, 16)
    width: int = 64
    layers: int = 2
    heads: int = 4
    sample_rate: int = 16_000
    num_samples: int = 16_000
    mel_mean: float = -3.15
    mel_std: float = 3.64

    def __post_init__(self):
        pt, pf = self.patch_size
        if self.time_frames % pt or self.mel_bins % pf:
            raise ValueError(
                f"audio: ({self.time_frames}, {self.mel_bins}) is not a multiple of patch "
                f"{self.patch_size}"
            )
        if self.width % self.heads:
            raise ValueError(f"audio: width {self.width} is not a multiple of heads {self.heads}")
        want = num_frames(self.num_samples, self.sample_rate, 25.0, 10.0)
        if want != self.time_frames:
            raise ValueError(
                f"audio: {self.num_samples} samples at {self.sample_rate} Hz give {want} "
                f"log-mel frames, not time_frames {self.time_frames}"
            )

    @property
    def num_patches(self) -> int:
        return (self.time_frames // self.patch_size[0]) * (self.mel_bins // self.patch_size[1])


@dataclasses.dataclass(frozen=True)
class AVConfig:
    """The two-tower configuration: both towers, the shared ``projection_dim`` and the initial
    ``logit_scale`` (``log(1 / 0.07)``)."""

    video: VideoConfig = dataclasses.field(default_factory=VideoConfig)
    audio: AudioConfig = dataclasses.field(default_factory=AudioConfig)
    projection_dim: int = 64
    logit_scale_init: float = float(np.log(1 / 0.07))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly nested dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["audio"]["patch_size"] = list(self.audio.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AVConfig:
        """Inverse of :meth:`to_dict`."""
        audio = dict(d["audio"])
        audio["patch_size"] = tuple(audio["patch_size"])
        return cls(
            video=VideoConfig(**d["video"]),
            audio=AudioConfig(**audio),
            projection_dim=int(d["projection_dim"]),
            logit_scale_init=float(d["logit_scale_init"]),
        )


def _blocks(x: Array, count: int, width: int, heads: int, prefix: str) -> Array:
    for i in range(count):
        x = EncoderBlock(heads, 4 * width, "gelu", 1e-5, name=f"{prefix}_{i}")(x)
    return x


def _with_class(module: nn.Module, x: Array, cls_name: str, pos_name: str) -> Array:
    """``[cls; x] + pos`` for ``x`` of shape ``(B, L, W)``."""
    width = x.shape[-1]
    init = nn.initializers.normal(width**-0.5)
    cls = module.param(cls_name, init, (width,), jnp.float32)
    pos = module.param(pos_name, init, (x.shape[1] + 1, width), jnp.float32)
    cls = jnp.broadcast_to(cls, (x.shape[0], 1, width))
    return jnp.concatenate([cls, x.astype(jnp.float32)], axis=1) + pos


class VideoTower(nn.Module):
    """``(B, T, H, W, 3)`` normalised frames -> ``(B, projection_dim)`` (factorised
    space-time ViT, see the module docstring)."""

    config: VideoConfig
    projection_dim: int

    @nn.compact
    def __call__(self, videos: Array) -> Array:
        cfg = self.config
        expected = (cfg.frames, cfg.image_size, cfg.image_size, 3)
        if videos.ndim != 5 or tuple(videos.shape[1:]) != expected:
            raise ValueError(f"videos must be (batch, {expected}), got {videos.shape}")
        b, t = videos.shape[:2]
        p = cfg.patch_size
        x = nn.Conv(
            cfg.width, (p, p), strides=(p, p), padding="VALID", use_bias=False, name="patch_embed"
        )(videos.reshape(b * t, *videos.shape[2:]))
        x = _with_class(self, x.reshape(b * t, -1, cfg.width), "class_embedding", "pos_embed")
        x = LayerNorm(name="ln_pre")(x)
        x = _blocks(x, cfg.layers, cfg.width, cfg.heads, "blocks")
        frames = LayerNorm(name="ln_frame")(x[:, 0]).reshape(b, t, cfg.width)
        x = _with_class(self, frames, "temporal_class", "temporal_pos")
        x = _blocks(x, cfg.temporal_layers, cfg.width, cfg.heads, "temporal_blocks")
        pooled = LayerNorm(name="ln_post")(x[:, 0])
        return nn.Dense(self.projection_dim, use_bias=False, name="proj")(pooled)


class AudioTower(nn.Module):
    """``(B, time_frames, mel_bins)`` normalised log-mel -> ``(B, projection_dim)`` (AST)."""

    config: AudioConfig
    projection_dim: int

    @nn.compact
    def __call__(self, mels: Array) -> Array:
        cfg = self.config
        expected = (cfg.time_frames, cfg.mel_bins)
        if mels.ndim != 3 or tuple(mels.shape[1:]) != expected:
            raise ValueError(f"log-mel inputs must be (batch, {expected}), got {mels.shape}")
        x = nn.Conv(
            cfg.width,
            cfg.patch_size,
            strides=cfg.patch_size,
            padding="VALID",
            use_bias=False,
            name="patch_embed",
        )(mels[..., None])
        x = _with_class(self, x.reshape(x.shape[0], -1, cfg.width), "class_embedding", "pos_embed")
        x = LayerNorm(name="ln_pre")(x)
        x = _blocks(x, cfg.layers, cfg.width, cfg.heads, "blocks")
        pooled = LayerNorm(name="ln_post")(x[:, 0])
        return nn.Dense(self.projection_dim, use_bias=False, name="proj")(pooled)


class AVTwoTower(nn.Module):
    """Both towers; ``__call__(videos=None, audios=None)`` returns L2-normalised
    ``{'video': (B, d), 'audio': (B', d)}`` for whichever inputs are given. ``logit_scale``
    is created at init only."""

    config: AVConfig

    @nn.compact
    def __call__(self, videos: Array | None = None, audios: Array | None = None) -> dict:
        cfg = self.config
        if self.is_initializing():
            self.param("logit_scale", nn.initializers.constant(cfg.logit_scale_init), ())
        out = {}
        if videos is not None:
            out["video"] = l2_normalize(
                VideoTower(cfg.video, cfg.projection_dim, name="video")(videos)
            )
        if audios is not None:
            out["audio"] = l2_normalize(
                AudioTower(cfg.audio, cfg.projection_dim, name="audio")(audios)
            )
        return out


# ----------------------------------------------------------------------------- functional API


def video_encoder(config: AVConfig) -> Callable[[PyTree, Array], Array]:
    """``apply_fn(video_params, video_inputs) -> (B, projection_dim)`` unnormalised features."""
    tower = VideoTower(config.video, config.projection_dim)
    return lambda params, videos: tower.apply({"params": params}, videos)


def audio_encoder(config: AVConfig) -> Callable[[PyTree, Array], Array]:
    """``apply_fn(audio_params, audio_inputs) -> (B, projection_dim)`` unnormalised features."""
    tower = AudioTower(config.audio, config.projection_dim)
    return lambda params, mels: tower.apply({"params": params}, mels)


def video_inputs(videos: np.ndarray, config: AVConfig | None = None) -> np.ndarray:
    """uint8 ``(N, T, H, W, 3)`` videos -> float32 ``(x / 255 - 0.5) / 0.25``.

    Raises:
      ValueError: not uint8 ``(N, T, H, W, 3)``, or (with ``config``) ``T`` frames of
        ``H x W`` px other than the video tower's ``frames`` of ``image_size`` px.
    """
    videos = np.asarray(videos)
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 (N, T, H, W, 3) videos, got {videos.dtype} {videos.shape}"
        )
    if config is not None:
        v = config.video
        if videos.shape[1:4] != (v.frames, v.image_size, v.image_size):
            raise ValueError(
                f"clips of {videos.shape[1]} frames of {videos.shape[2]}x{videos.shape[3]} px; "
                f"the video tower takes {v.frames} frames of {v.image_size}x{v.image_size} px"
            )
    return (videos.astype(np.float32) / 255.0 - VIDEO_MEAN) / VIDEO_STD


def audio_inputs(
    waveforms: np.ndarray, sample_rate: int, config: AVConfig | None = None
) -> np.ndarray:
    """Waveforms ``(N, S)`` -> float32 normalised log-mel ``(N, time_frames, mel_bins)``:
    ``(log_mel(x) - mel_mean) / mel_std`` with the config's fixed constants, after
    :func:`~rest_jax.data.audio_features.check_waveforms` (rate and length of the config)."""
    cfg = (config or AVConfig()).audio
    x = check_waveforms(waveforms, sample_rate, cfg.sample_rate, cfg.num_samples)
    mels = log_mel(x, cfg.sample_rate, cfg.mel_bins)
    return (mels - np.float32(cfg.mel_mean)) / np.float32(cfg.mel_std)


@dataclasses.dataclass(frozen=True)
class AudioVisualModel:
    """Functional wrapper: ``init``, ``encode_video``, ``encode_audio`` over a plain params
    dict ``{'video', 'audio', 'logit_scale'}``."""

    config: AVConfig

    @property
    def module(self) -> AVTwoTower:
        return AVTwoTower(self.config)

    def dummy_inputs(self, batch: int = 1) -> tuple[Array, Array]:
        v, a = self.config.video, self.config.audio
        videos = jnp.zeros((batch, v.frames, v.image_size, v.image_size, 3), jnp.float32)
        return videos, jnp.zeros((batch, a.time_frames, a.mel_bins), jnp.float32)

    def init(self, rng: Array) -> PyTree:
        """Random parameters (``jax.eval_shape(model.init, key)`` for shapes alone)."""
        return jax.jit(self.module.init)(rng, *self.dummy_inputs())["params"]

    def encode_video(self, params: PyTree, videos: Array) -> Array:
        """L2-normalised ``(B, d)`` video embeddings (``params`` needs ``'video'`` only)."""
        return self.module.apply({"params": params}, videos=videos)["video"]

    def encode_audio(self, params: PyTree, audios: Array) -> Array:
        """L2-normalised ``(B, d)`` audio embeddings (``params`` needs ``'audio'`` only)."""
        return self.module.apply({"params": params}, audios=audios)["audio"]

    def logit_scale(self, params: PyTree) -> Array:
        """``exp(logit_scale)``, the inverse temperature, clipped to [1, 100] as in CLIP."""
        return 1.0 / contrastive_temperature(params["logit_scale"])
