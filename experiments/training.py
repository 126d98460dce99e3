"""Contrastive training of a small CLIP-style source model (the synthetic world's source model).

The symmetric InfoNCE loss with a learnt temperature, AdamW with warm-up and cosine decay,
one random caption per image per step; deterministic for a seed on a given machine.
The trained model is written by :func:`rest_jax.pretrained.save_world_source`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from rest_jax.losses import symmetric_contrastive_loss
from rest_jax.models import ClipConfig, ClipModel, TextConfig, VisionConfig, contrastive_temperature

PyTree = Any

# Per-channel statistics used to turn the world's uint8 images into model inputs.
WORLD_MEAN = (0.5, 0.5, 0.5)
WORLD_STD = (0.25, 0.25, 0.25)


@dataclasses.dataclass(frozen=True)
class SourceModelConfig:
    """Size of the source two-tower and its training schedule.

    The defaults train in about 2 minutes on a 2-core CPU (~0.03 s per step): 8 px patches
    (16 tokens per 32 px image), 32 text tokens (SynthWorld captions rarely need more; longer
    ones are cut, keeping their end-of-text token) and batches of 64, which cost about half as
    much per example as batches of 128 there (XLA CPU), so the same time buys more updates.
    """

    width: int = 64
    layers: int = 2
    heads: int = 4
    patch_size: int = 8
    projection_dim: int = 64
    max_text_len: int = 32
    steps: int = 4000
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    seed: int = 0


def world_clip_config(
    cfg: SourceModelConfig, image_size: int, vocab_size: int, sot_id: int, eot_id: int
) -> ClipConfig:
    """The CLIP configuration of the source model (quick_gelu, both towers of equal width).

    ``eot_id`` must not be 2: CLIP reads ``eos_token_id == 2`` as the legacy rule "pool at the
    largest token id".
    """
    if eot_id == 2:
        raise ValueError("eot_id 2 selects CLIP's legacy argmax pooling; use another id")
    return ClipConfig(
        vision=VisionConfig(
            image_size=image_size,
            patch_size=cfg.patch_size,
            hidden_size=cfg.width,
            intermediate_size=4 * cfg.width,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
        ),
        text=TextConfig(
            vocab_size=vocab_size,
            max_position_embeddings=cfg.max_text_len,
            hidden_size=cfg.width,
            intermediate_size=4 * cfg.width,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            bos_token_id=sot_id,
            eos_token_id=eot_id,
            pad_token_id=0,
        ),
        projection_dim=cfg.projection_dim,
    )


def image_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC images -> float32 model inputs ``(x / 255 - mean) / std``."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 NHWC images, got {images.dtype} {images.shape}")
    x = images.astype(np.float32) / 255.0
    return (x - np.asarray(WORLD_MEAN, np.float32)) / np.asarray(WORLD_STD, np.float32)


def init_params(model: ClipModel, seed: int) -> PyTree:
    """Random parameters of ``model`` for ``seed``, drawn with numpy in ``model.init``'s shapes.

    Kernels ~ N(0, 1/fan_in), embeddings ~ N(0, 0.02^2), LayerNorm scale 1 and biases 0,
    ``logit_scale = log(1 / 0.07)``. (Compiling Flax's own initialisers costs ~15 s on a
    2-core CPU; this costs nothing.)
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))

    def draw(path, leaf):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if name == "logit_scale":
            return jnp.full(leaf.shape, np.log(1 / 0.07), leaf.dtype)
        if name.endswith("scale"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if name.endswith("bias"):
            return jnp.zeros(leaf.shape, leaf.dtype)
        if name.endswith("kernel") and len(leaf.shape) >= 2:
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(0, fan_in**-0.5, leaf.shape), leaf.dtype)
        return jnp.asarray(rng.normal(0, 0.02, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def make_train_step(model: ClipModel, optimizer: optax.GradientTransformation):
    """``step(params, opt_state, images, token_ids) -> (params, opt_state, loss)``, jitted."""

    def loss_fn(params, images, token_ids):
        out = model.embed(params, images=images, texts=token_ids)
        temperature = contrastive_temperature(params["logit_scale"])
        return symmetric_contrastive_loss(out["image"], out["text"], temperature)

    @jax.jit
    def step(params, opt_state, images, token_ids):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, token_ids)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def batch_indices(
    caption_image_ids: np.ndarray, num_images: int, batch_size: int, steps: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(image ids, caption ids)`` of each training step, in epochs.

    Every epoch visits the images in a fresh random order (``np.random.default_rng(seed)``),
    ``batch_size`` distinct images per step (the last partial batch of an epoch is dropped), and
    draws one of each image's captions uniformly, so a batch has no false negatives by identity.

    Args:
      caption_image_ids: (C,) image index of each caption; every image needs a caption.
      num_images: number of images N.
      batch_size: images per step, at most N.
      steps: number of steps to yield.
      seed: the sampling seed.

    Yields:
      int arrays ``(batch_size,)``: image ids and the id of one caption of each.
    """
    caption_image_ids = np.asarray(caption_image_ids)
    if not 0 < batch_size <= num_images:
        raise ValueError(f"batch_size must be in [1, {num_images}] (images), got {batch_size}")
    by_image = np.argsort(caption_image_ids, kind="stable")
    counts = np.bincount(caption_image_ids, minlength=num_images)
    if len(counts) != num_images or not counts.all():
        raise ValueError("every image needs at least one caption, and ids must be < num_images")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = np.random.default_rng(seed)
    per_epoch = num_images // batch_size
    order = rng.permutation(num_images)
    for i in range(steps):
        if i and i % per_epoch == 0:
            order = rng.permutation(num_images)
        picks = order[(i % per_epoch) * batch_size : (i % per_epoch + 1) * batch_size]
        offsets = (rng.random(batch_size) * counts[picks]).astype(np.int64)
        yield picks, by_image[starts[picks] + offsets]


def train_contrastive(
    model: ClipModel,
    params: PyTree,
    images: np.ndarray,
    token_ids: np.ndarray,
    caption_image_ids: np.ndarray,
    cfg: SourceModelConfig,
    *,
    progress: bool = True,
) -> tuple[PyTree, np.ndarray]:
    """Trains both towers with the symmetric contrastive loss on fixed model inputs.

    Each step takes ``batch_size`` distinct images and one caption of each
    (:func:`batch_indices`), so the batch has no false negatives by identity.

    Args:
      model: the two-tower model.
      params: initial parameters.
      images: float32 model inputs (N, H, W, 3).
      token_ids: int32 (C, L) caption tokens.
      caption_image_ids: (C,) image index of each caption.
      cfg: the schedule.
      progress: show a progress bar.

    Returns:
      ``(params, losses)`` with the loss of every step.
    """
    return train_contrastive_batches(
        model,
        params,
        lambda picks, captions: (images[picks], token_ids[captions]),
        caption_image_ids,
        len(images),
        cfg,
        progress=progress,
    )


def train_contrastive_batches(
    model: ClipModel,
    params: PyTree,
    make_batch: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    caption_image_ids: np.ndarray,
    num_images: int,
    cfg: SourceModelConfig,
    *,
    progress: bool = True,
) -> tuple[PyTree, np.ndarray]:
    """As :func:`train_contrastive`, with the batch built on the host at every step.

    Args:
      make_batch: ``(image ids, caption ids) -> (image inputs, token ids)`` of one step, e.g.
        augmented copies (``rest_jax.augment``); called in step order.
      caption_image_ids: (C,) image index of each caption.
      num_images: number of training images.

    Returns:
      ``(params, losses)`` with the loss of every step.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, cfg.warmup_steps, max(cfg.steps, cfg.warmup_steps + 1)
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=cfg.weight_decay)
    )
    opt_state = optimizer.init(params)
    step = make_train_step(model, optimizer)
    batches = batch_indices(caption_image_ids, num_images, cfg.batch_size, cfg.steps, cfg.seed)
    losses = np.zeros(cfg.steps, np.float32)
    bar = tqdm(range(cfg.steps), desc="source model", disable=not progress, mininterval=2.0)
    pending = []
    for i in bar:
        picks, caption = next(batches)
        images, token_ids = make_batch(picks, caption)
        params, opt_state, loss = step(params, opt_state, images, token_ids)
        pending.append((i, loss))
        if len(pending) > 4:  # read losses a few steps late: no sync per step
            j, value = pending.pop(0)
            losses[j] = float(value)
            if j % 50 == 0:
                bar.set_postfix(loss=f"{losses[j]:.3f}")
    for j, value in pending:
        losses[j] = float(value)
    return params, losses
