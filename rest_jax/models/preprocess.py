"""Inputs for CLIP: image preprocessing, caption normalisation and the tokenizer of a checkpoint.

The reference preprocessing of the study (docs/method.md section 8.4) is: resize to
``image_size x image_size`` (bicubic, no crop), scale to [0, 1], normalise with CLIP's mean and
std; captions lowercased, the punctuation ``.!"()*#:;~`` replaced by spaces, at most 30 words,
then tokenised to a fixed length. Mean, std, interpolation and the tokenizer are read from the
checkpoint directory when it has them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rest_jax.files import read_json

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# PIL.Image.Resampling codes, as written in preprocessor_config.json.
_PIL_RESAMPLE_NAMES = {
    0: "nearest",
    1: "lanczos",
    2: "bilinear",
    3: "bicubic",
    4: "box",
    5: "hamming",
}
_JAX_RESIZE_METHODS = {
    "nearest": "nearest",
    "bilinear": "linear",
    "bicubic": "cubic",
    "lanczos": "lanczos3",
}

_CAPTION_PUNCTUATION = re.compile(r'[.!"()*#:;~]')
_WHITESPACE_RUN = re.compile(r"\s{2,}")


# ----------------------------------------------------------------------------- images


@dataclasses.dataclass(frozen=True)
class PreprocessInfo:
    """Image preprocessing constants of a checkpoint.

    Attributes:
      image_size: output side (the vision tower's ``image_size``); images are resized to a
        square without cropping.
      mean, std: per-channel normalisation of [0, 1] pixels.
      resample: interpolation name ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming").
    """

    image_size: int = 224
    mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    std: tuple[float, ...] = OPENAI_CLIP_STD
    resample: str = "bicubic"

    def __post_init__(self):
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {self.mean} and std {self.std} differ in length")
        if self.resample not in _PIL_RESAMPLE_NAMES.values():
            raise ValueError(
                f"unknown resample {self.resample!r}; known: {sorted(_PIL_RESAMPLE_NAMES.values())}"
            )


def load_preprocess_info(directory: str | Path, image_size: int) -> PreprocessInfo:
    """Reads ``preprocessor_config.json`` (mean, std, resample) when present, else CLIP's defaults.

    Args:
      directory: checkpoint directory.
      image_size: the model's input side; the output size of preprocessing, whatever the
        processor's own resize/crop settings (the study resizes without cropping).
    """
    path = Path(directory) / "preprocessor_config.json"
    if not path.is_file():
        return PreprocessInfo(image_size=image_size)
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    resample = raw.get("resample", 3)
    if isinstance(resample, int):
        if resample not in _PIL_RESAMPLE_NAMES:
            raise ValueError(f"{path}: unknown resample code {resample}")
        resample = _PIL_RESAMPLE_NAMES[resample]
    return PreprocessInfo(
        image_size=image_size,
        mean=tuple(float(m) for m in raw.get("image_mean", OPENAI_CLIP_MEAN)),
        std=tuple(float(s) for s in raw.get("image_std", OPENAI_CLIP_STD)),
        resample=str(resample).lower(),
    )


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """HxW and HxWx1 -> HxWx3 (repeat); HxWx4 -> HxWx3 (drop alpha, as PIL's convert('RGB'))."""
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"an image must be HxW or HxWxC, got shape {image.shape}")
    channels = image.shape[-1]
    if channels == 1:
        return np.repeat(image, 3, axis=-1)
    if channels == 4:
        return image[..., :3]
    if channels != 3:
        raise ValueError(f"an image must have 1, 3 or 4 channels, got {channels}")
    return image


def _check_uint8(image: Any) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (0..255), got dtype {image.dtype}")
    return image


def _normalize(pixels: Any, info: PreprocessInfo, xp: Any) -> Any:
    """``(pixels / 255 - mean) / std`` in float32."""
    mean = xp.asarray(info.mean, dtype=xp.float32)
    std = xp.asarray(info.std, dtype=xp.float32)
    return (pixels.astype(xp.float32) / 255.0 - mean) / std


def preprocess_images(
    images: np.ndarray | Sequence[np.ndarray], info: PreprocessInfo, backend: str = "pil"
) -> Any:
    """Resizes uint8 images to ``info.image_size`` squared (no crop) and normalises them.

    ``x = (resize(image) / 255 - mean) / std``.

    Args:
      images: uint8 ``(N, H, W, C)`` array, or (``backend="pil"``) a sequence of uint8 ``HxWxC``
        images of any sizes. Grey images are repeated to RGB, alpha is dropped.
      info: the checkpoint's :class:`PreprocessInfo`.
      backend: "pil" resizes each image with Pillow to uint8 as the PyTorch reference
        (torchvision ``Resize`` on PIL images) does, returning a numpy array; "jax" resizes
        with ``jax.image.resize`` (antialiased, rounded to 0..255, jittable), returning a
        ``jax.Array``. They differ by about one grey level.

    Returns:
      float32 ``(N, image_size, image_size, 3)``.
    """
    if backend == "pil":
        return _preprocess_pil(images, info)
    if backend == "jax":
        batch = _check_uint8(images)
        if batch.ndim != 4:
            raise ValueError(f"backend 'jax' needs an (N, H, W, C) array, got shape {batch.shape}")
        batch = np.stack([_as_rgb(image) for image in batch]) if batch.shape[-1] != 3 else batch
        return resize_and_normalize(jnp.asarray(batch), info)
    raise ValueError(f"unknown backend {backend!r}; use 'pil' or 'jax'")


def _preprocess_pil(images: Any, info: PreprocessInfo) -> np.ndarray:
    from PIL import Image

    resample = getattr(Image.Resampling, info.resample.upper())
    size = (info.image_size, info.image_size)
    out = []
    for image in images:
        rgb = _as_rgb(_check_uint8(image))
        resized = Image.fromarray(rgb).resize(size, resample=resample)
        out.append(np.asarray(resized))
    if not out:
        raise ValueError("no images to preprocess")
    return _normalize(np.stack(out), info, np)


def resize_and_normalize(images: jax.Array, info: PreprocessInfo) -> jax.Array:
    """Jittable resize (``jax.image.resize``, antialiased) of ``(N, H, W, 3)`` 0..255 images, then
    rounding to integer grey levels and normalisation."""
    if info.resample not in _JAX_RESIZE_METHODS:
        raise ValueError(
            f"resample {info.resample!r} has no jax.image.resize equivalent; use backend 'pil'"
        )
    n, _, _, c = images.shape
    shape = (n, info.image_size, info.image_size, c)
    resized = jax.image.resize(
        images.astype(jnp.float32), shape, _JAX_RESIZE_METHODS[info.resample], antialias=True
    )
    return _normalize(jnp.clip(jnp.round(resized), 0.0, 255.0), info, jnp)


# ----------------------------------------------------------------------------- captions


def normalize_caption(text: str, max_words: int = 30) -> str:
    """The reference caption cleaning (docs/method.md section 8.4).

    Lowercase; each of ``.!"()*#:;~`` becomes a space; runs of whitespace collapse to one space;
    leading/trailing spaces go; at most ``max_words`` space-separated words are kept.
    """
    if not isinstance(text, str):
        raise TypeError(f"a caption must be a str, got {type(text).__name__}")
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    text = _CAPTION_PUNCTUATION.sub(" ", text.lower())
    text = _WHITESPACE_RUN.sub(" ", text).rstrip("\n").strip(" ")
    return " ".join(text.split(" ")[:max_words])


class ClipTokenizer:
    """Texts -> ``(B, context_length)`` int32 token ids: start token, text, end token, padding.

    Truncation keeps the end-of-text token (the text tower pools there). Build it with
    :func:`load_tokenizer`.
    """

    def __init__(self, backend: Any, kind: str, context_length: int):
        self._backend = backend
        self.kind = kind
        self.context_length = context_length

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        if self.kind == "tokenizers":
            ids = [encoding.ids for encoding in self._backend.encode_batch(texts)]
        else:
            ids = self._backend(
                texts, padding="max_length", truncation=True, max_length=self.context_length
            )["input_ids"]
        return np.asarray(ids, dtype=np.int32).reshape(len(texts), self.context_length)


def _special_token(directory: Path, name: str, default: str) -> str:
    for filename in ("special_tokens_map.json", "tokenizer_config.json"):
        path = directory / filename
        if path.is_file():
            raw = read_json(path)
            token = raw.get(name) if isinstance(raw, dict) else None
            if isinstance(token, dict):
                token = token.get("content")
            if isinstance(token, str):
                return token
    return default


TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt")


def _check_tokenizer_files(directory: Path) -> None:
    """Raises unless ``directory`` has ``tokenizer.json`` or both ``vocab.json`` and
    ``merges.txt`` (what ``CLIPTokenizer.from_pretrained`` needs to build a real vocabulary)."""
    present = {name for name in TOKENIZER_FILES if (directory / name).is_file()}
    if "tokenizer.json" in present or {"vocab.json", "merges.txt"} <= present:
        return
    missing = [name for name in TOKENIZER_FILES if name not in present]
    raise FileNotFoundError(
        f"no tokenizer in the checkpoint directory {directory}: it needs tokenizer.json, or "
        f"vocab.json and merges.txt (missing: {', '.join(missing)}). Checkpoints saved with "
        "their weights only (config.json, model.safetensors) lack them. Add the tokenizer of "
        "the model the weights came from, e.g. with transformers: "
        "CLIPTokenizer.from_pretrained('openai/clip-vit-base-patch16').save_pretrained(DIR), "
        "or copy those files from its Hugging Face repository (resolve_checkpoint(name, "
        "allow_download=True) fetches them with the weights)"
    )


def load_tokenizer(
    directory: str | Path, context_length: int = 77, backend: str = "auto"
) -> ClipTokenizer:
    """The tokenizer stored with a checkpoint.

    Args:
      directory: checkpoint directory with ``tokenizer.json`` (read with the ``tokenizers``
        package) or the files ``transformers.CLIPTokenizer.from_pretrained`` reads.
      context_length: fixed output length (the text tower's ``max_position_embeddings``).
      backend: "tokenizers", "transformers", or "auto" (the first that is installed and has
        its files).

    Returns:
      A :class:`ClipTokenizer`.

    Raises:
      FileNotFoundError: the directory has neither ``tokenizer.json`` nor ``vocab.json`` and
        ``merges.txt`` (a checkpoint saved with its weights only; transformers would quietly
        build a tokenizer of 2 tokens); the message says how to add them.
      ValueError: a tokenizer file that cannot be read, naming it.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"tokenizer directory {directory} does not exist")
    if backend not in ("auto", "tokenizers", "transformers"):
        raise ValueError(f"unknown backend {backend!r}")
    tokenizer_json = directory / "tokenizer.json"
    if backend in ("auto", "tokenizers") and tokenizer_json.is_file():
        try:
            import tokenizers
        except ImportError:
            if backend == "tokenizers":
                raise
        else:
            try:
                tok = tokenizers.Tokenizer.from_file(str(tokenizer_json))
            except Exception as err:  # tokenizers raises a bare Exception for a bad file
                raise ValueError(
                    f"{tokenizer_json}: cannot read the tokenizer ({err}); the file may be "
                    "truncated or damaged"
                ) from err
            pad_token = _special_token(directory, "pad_token", "<|endoftext|>")
            pad_id = tok.token_to_id(pad_token)
            if pad_id is None:
                raise ValueError(f"pad token {pad_token!r} is not in {tokenizer_json}")
            tok.enable_truncation(max_length=context_length)
            tok.enable_padding(length=context_length, pad_id=pad_id, pad_token=pad_token)
            return ClipTokenizer(tok, "tokenizers", context_length)
    if backend == "tokenizers":
        raise FileNotFoundError(f"{tokenizer_json} not found")
    _check_tokenizer_files(directory)
    try:
        from transformers import CLIPTokenizer
    except ImportError as err:
        raise ImportError(
            f"no usable tokenizer for {directory}: install `tokenizers` (needs tokenizer.json) "
            "or `transformers` (the 'convert' extra)"
        ) from err
    # transformers 5 ignores vocab_file=/merges_file=; from_pretrained reads the directory.
    tok = CLIPTokenizer.from_pretrained(str(directory))
    return ClipTokenizer(tok, "transformers", context_length)
