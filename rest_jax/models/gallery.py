"""Embedding a gallery once, in fixed-size padded batches.

The gallery tower is frozen during adaptation (docs/method.md section 0): its
L2-normalised embeddings G (N x d) are computed once, before the stream. Every batch has the same
shape (the last one is padded, :func:`rest_jax.adapter.pad_batch`), so the encoder compiles once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rest_jax.adapter import pad_batch
from rest_jax.data.streams import num_rows, take_rows
from rest_jax.numerics import l2_normalize

PyTree = Any


@functools.partial(jax.jit, static_argnums=0)
def _embed_normalized(embed_fn: Callable, params: PyTree, batch: jax.Array) -> jax.Array:
    return l2_normalize(embed_fn(params, batch).astype(jnp.float32))


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
      inputs: rows first: an array (images, token ids), a memory map, a dict of arrays (a
        query made of two inputs), or a list of items when ``transform`` builds arrays.
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
    # A list of items goes through ``transform``; arrays and dicts of arrays are sliced directly.
    total = len(inputs) if transform is not None else num_rows(inputs)
    if total == 0:
        raise ValueError("the gallery is empty")
    outputs = []
    with tqdm(total=total, desc=desc, unit="item", disable=not show_progress) as bar:
        for start in range(0, total, batch_size):
            rows = slice(start, start + batch_size)
            if transform is not None:
                batch = np.asarray(transform(inputs[rows]))
            elif isinstance(inputs, Mapping):
                batch = take_rows(inputs, rows)
            else:
                batch = np.asarray(inputs[rows])
            count = num_rows(batch)
            outputs.append(
                _embed_normalized(embed_fn, params, pad_batch(batch, batch_size)["inputs"])
            )
            bar.update(count)
    return jnp.concatenate(outputs, axis=0)[:total]
