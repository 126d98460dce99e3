"""Embedding a gallery once, in fixed-size padded batches.

The gallery tower is frozen during adaptation (docs/method.md section 0): its
L2-normalised embeddings G (N x d) are computed once, before the stream. Every batch has the same
shape (the last one is padded by repeating its final item), so the encoder compiles once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rest_jax.models.clip import l2_normalize

PyTree = Any


@functools.partial(jax.jit, static_argnums=0)
def _embed_normalized(embed_fn: Callable, params: PyTree, batch: jax.Array) -> jax.Array:
    return l2_normalize(embed_fn(params, batch))


def _pad_to(batch: np.ndarray, size: int) -> np.ndarray:
    """Repeats the last item so that the leading axis has ``size`` entries."""
    missing = size - batch.shape[0]
    if missing == 0:
        return batch
    return np.concatenate([batch, np.repeat(batch[-1:], missing, axis=0)], axis=0)


def embed_gallery(
    embed_fn: Callable[[PyTree, jax.Array], jax.Array],
    params: PyTree,
    inputs: np.ndarray | Sequence[Any],
    batch_size: int,
    show_progress: bool = True,
    transform: Callable[[Any], np.ndarray] | None = None,
    desc: str = "gallery",
) -> jax.Array:
    """``G = normalize(embed_fn(params, inputs))`` computed batch by batch.

    Args:
      embed_fn: ``(params, batch) -> (b, d)`` features, e.g. :func:`image_encoder` or
        :func:`text_encoder`; it must be hashable (a function is) and is jitted once.
      params: that encoder's parameters.
      inputs: anything with ``len`` and slicing along the first axis: an array (images,
        token ids), a memory map, or a list of items when ``transform`` builds arrays.
      batch_size: items per call; the last batch is padded to this size.
      show_progress: show a tqdm progress bar.
      transform: optional host-side function from a slice of ``inputs`` to a batch array
        (e.g. ``functools.partial(preprocess_images, info=info)``), applied before padding.
      desc: progress bar label.

    Returns:
      float32 ``(N, d)`` L2-normalised embeddings, in input order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    total = len(inputs)
    if total == 0:
        raise ValueError("the gallery is empty")
    outputs = []
    with tqdm(total=total, desc=desc, unit="item", disable=not show_progress) as bar:
        for start in range(0, total, batch_size):
            chunk = inputs[start : start + batch_size]
            batch = np.asarray(transform(chunk) if transform is not None else chunk)
            count = batch.shape[0]
            outputs.append(_embed_normalized(embed_fn, params, _pad_to(batch, batch_size)))
            bar.update(count)
    return jnp.concatenate(outputs, axis=0)[:total]
