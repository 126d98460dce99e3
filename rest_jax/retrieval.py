"""Top-K retrieval for galleries too large for one similarity matrix.

Three ways to the same answer (values and indices of the K best gallery items per query,
ties broken towards the lower gallery index, as ``lax.top_k`` does):

- :func:`top_k` with ``chunk_size=None``: one (B, N) score matrix.
- :func:`top_k` with ``chunk_size=C``: a scan over gallery chunks of C rows, merging a running
  top-K with each chunk's, so that memory is O(B (C + K)) instead of O(B N).
- :func:`sharded_top_k`: the gallery split over a device mesh axis; every device computes the
  top-K of its shard (chunked, if asked), the per-shard winners are gathered and a global
  top-K picks the final K. One code path for one device or many (and several hosts, with
  ``jax.distributed`` initialised and a global mesh).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def _merge(values, indices, new_values, new_indices, k):
    """Top-K of the union of two candidate sets; the first set holds the lower indices."""
    v = jnp.concatenate([values, new_values], axis=1)
    i = jnp.concatenate([indices, new_indices], axis=1)
    top_v, pos = jax.lax.top_k(v, k)
    return top_v, jnp.take_along_axis(i, pos, axis=1)


def top_k(
    queries: jax.Array,
    gallery: jax.Array,
    k: int,
    *,
    chunk_size: int | None = None,
    num_valid: jax.Array | int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The K highest scores ``q_i . g_j`` per query, and their gallery indices.

    Args:
      queries: (B, d).
      gallery: (N, d).
      k: how many items per query (``1 <= k <= N``).
      chunk_size: score the gallery C rows at a time (None: all at once). N need not be a
        multiple of C: the last chunk is padded with -inf scores.

    Returns:
      ``(values (B, k), indices (B, k) int32)``.
    """
    n = gallery.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the gallery size), got {k}")
    limit = n if num_valid is None else jnp.minimum(num_valid, n)
    if chunk_size is None or chunk_size >= n:
        scores = queries @ gallery.T
        if num_valid is not None:
            scores = jnp.where(jnp.arange(n) < limit, scores, -jnp.inf)
        return jax.lax.top_k(scores, k)
    if chunk_size < k:
        raise ValueError(f"chunk_size ({chunk_size}) must be >= k ({k})")
    num_chunks = -(-n // chunk_size)
    pad = num_chunks * chunk_size - n
    chunks = jnp.pad(gallery, ((0, pad), (0, 0))).reshape(num_chunks, chunk_size, -1)
    dtype = jnp.promote_types(queries.dtype, gallery.dtype)
    b = queries.shape[0]

    def body(carry, inputs):
        values, indices = carry
        chunk, start = inputs
        scores = (queries @ chunk.T).astype(dtype)
        ids = start + jnp.arange(chunk_size, dtype=jnp.int32)
        scores = jnp.where(ids < limit, scores, -jnp.inf)
        top_v, pos = jax.lax.top_k(scores, k)
        return _merge(values, indices, top_v, ids[pos], k), None

    init = (jnp.full((b, k), -jnp.inf, dtype), jnp.full((b, k), n, jnp.int32))
    starts = jnp.arange(num_chunks, dtype=jnp.int32) * chunk_size
    (values, indices), _ = jax.lax.scan(body, init, (chunks, starts))
    return values, indices


def gallery_mesh(devices=None, axis: str = "gallery") -> Mesh:
    """A 1-D mesh over ``devices`` (default: all, across hosts) named ``axis``."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), (axis,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that keeps a whole copy on every device of ``mesh`` (an adapter's state)."""
    return NamedSharding(mesh, P())


def put_on_mesh(tree, sharding: NamedSharding):
    """``jax.device_put(tree, sharding)``, except across several processes: there every
    process holds the same global values and fills its own devices from them, without the
    cross-process equality check (a collective per leaf) that ``jax.device_put`` runs then,
    which would be a host synchronisation on every batch."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def shard_gallery(gallery, mesh: Mesh, axis: str = "gallery") -> jax.Array:
    """Places an (N, d) gallery split along N over the mesh axis (N padded to a multiple of
    the axis size with zero rows; :func:`sharded_top_k` masks them by ``num_items``)."""
    size = mesh.shape[axis]
    n = gallery.shape[0]
    pad = (-n) % size
    gallery = jnp.pad(jnp.asarray(gallery), ((0, pad), (0, 0)))
    return put_on_mesh(gallery, NamedSharding(mesh, P(axis, None)))


def sharded_top_k(
    queries: jax.Array,
    gallery: jax.Array,
    k: int,
    mesh: Mesh,
    *,
    num_items: int | None = None,
    axis: str = "gallery",
    chunk_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Top-K over a gallery sharded along N on ``mesh[axis]``: local top-K, then global.

    Args:
      queries: (B, d), replicated (or any sharding: they are gathered for scoring).
      gallery: (N_padded, d) sharded along N (see :func:`shard_gallery`).
      k: items per query; each shard must hold at least k rows.
      mesh: the device mesh.
      num_items: the real gallery size N (rows at or past it are padding).
      axis: the mesh axis the gallery is split over.
      chunk_size: chunked scoring inside each shard.

    Returns:
      ``(values (B, k), indices (B, k))`` with global gallery indices, replicated.
    """
    total = gallery.shape[0]
    num_items = total if num_items is None else num_items
    shards = mesh.shape[axis]
    per_shard = total // shards
    if total % shards:
        raise ValueError(f"gallery rows ({total}) must be a multiple of the mesh axis ({shards})")
    if per_shard < k:
        raise ValueError(f"each shard holds {per_shard} rows, fewer than k={k}")
    if num_items < k:
        raise ValueError(f"k={k} is larger than the gallery ({num_items} items)")

    def local(q, g_shard):
        start = jax.lax.axis_index(axis) * per_shard
        values, idx = top_k(q, g_shard, k, chunk_size=chunk_size, num_valid=num_items - start)
        idx = idx + start
        all_v = jax.lax.all_gather(values, axis, axis=1, tiled=True)  # (B, shards * k)
        all_i = jax.lax.all_gather(idx, axis, axis=1, tiled=True)
        top_v, pos = jax.lax.top_k(all_v, k)
        return top_v, jnp.take_along_axis(all_i, pos, axis=1)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), P(axis, None)),
        out_specs=(P(), P()),
        check_vma=False,
    )(queries, gallery)


TopKFn = Callable[[jax.Array, jax.Array, int], tuple[jax.Array, jax.Array]]


def make_top_k(chunk_size: int | None = None, mesh: Mesh | None = None) -> TopKFn:
    """The gallery search a run uses: ``search(queries, gallery, k) -> (values, indices)``.

    Args:
      chunk_size: score the gallery this many rows at a time (None: all at once).
      mesh: a 1-D mesh whose axis the gallery rows are split over (see
        :func:`shard_gallery`; the row count must be a multiple of the axis size): local
        top-K per shard, then a global top-K. None: one device.

    Returns:
      A function of ``(queries (B, d), gallery (N, d), k)``, usable inside ``jit``.
    """
    if mesh is None:
        return lambda q, g, k: top_k(q, g, k, chunk_size=chunk_size)
    (axis,) = mesh.axis_names
    return lambda q, g, k: sharded_top_k(q, g, k, mesh, axis=axis, chunk_size=chunk_size)
