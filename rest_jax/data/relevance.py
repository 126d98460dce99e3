"""Which gallery items are relevant to each query (docs/method.md section 7.1).

Relevance is a padded index matrix ``relevant_ids: int32 [Q, R]``: row q lists the gallery
indices relevant to query q (in increasing order), padded with -1 on the right. R is the
largest number of relevant items of any query. Every query has at least one relevant item.

  * image -> text (COCO/Flickr/SynthWorld): each image's 5 captions, R = 5.
  * text -> image: each caption's image, R = 1.
  * identities (person re-id style, many-to-many): every gallery item of the query's identity.
  * composed retrieval: the target of each query, R = 1.

``relevance_mask`` turns it into the equivalent boolean matrix [Q, N] when that is handier.
"""

from __future__ import annotations

import numpy as np


def _padded_groups(keys_per_query: np.ndarray, gallery_keys: np.ndarray) -> np.ndarray:
    """Row q = sorted indices g with gallery_keys[g] == keys_per_query[q], -1 padded."""
    gallery_keys = np.asarray(gallery_keys)
    order = np.argsort(gallery_keys, kind="stable")
    sorted_keys = gallery_keys[order]
    start = np.searchsorted(sorted_keys, keys_per_query, side="left")
    stop = np.searchsorted(sorted_keys, keys_per_query, side="right")
    counts = stop - start
    if np.any(counts == 0):
        q = int(np.argmax(counts == 0))
        raise ValueError(f"query {q} (key {keys_per_query[q]}) has no relevant gallery item")
    width = int(counts.max()) if len(counts) else 1
    offsets = np.arange(width)
    take = start[:, None] + offsets[None, :]
    valid = offsets[None, :] < counts[:, None]
    out = np.where(valid, order[np.minimum(take, len(order) - 1)], -1)
    return out.astype(np.int32)


def image_to_text(caption_image_ids: np.ndarray, n_images: int | None = None) -> np.ndarray:
    """Relevant captions of each image query: int32 [N_images, R] (R = 5 for COCO/Flickr).

    Args:
      caption_image_ids: int [C], the image each caption belongs to (gallery = captions).
      n_images: number of image queries (default max id + 1). Every image needs a caption.
    """
    caption_image_ids = _as_ids(caption_image_ids, "caption_image_ids")
    if n_images is None:
        n_images = int(caption_image_ids.max()) + 1 if len(caption_image_ids) else 0
    return _padded_groups(np.arange(n_images), caption_image_ids)


def text_to_image(caption_image_ids: np.ndarray, n_images: int | None = None) -> np.ndarray:
    """Relevant image of each caption query: int32 [C, 1] (gallery = images 0..N-1)."""
    caption_image_ids = _as_ids(caption_image_ids, "caption_image_ids")
    if n_images is not None and len(caption_image_ids) and caption_image_ids.max() >= n_images:
        raise ValueError(f"caption_image_ids reach {caption_image_ids.max()} >= n_images")
    return caption_image_ids.astype(np.int32)[:, None]


def identity_relevance(
    query_identities: np.ndarray,
    gallery_identities: np.ndarray,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Many-to-many relevance by identity labels: every gallery item with the query's identity.

    Args:
      query_identities: int [Q] identity of each query.
      gallery_identities: int [N] identity of each gallery item.
      exclude: optional int [Q] gallery index to drop from each row (the query itself when
        query and gallery are the same set), or -1 for none.

    Returns:
      int32 [Q, R], -1 padded.
    """
    q = _as_ids(query_identities, "query_identities")
    g = _as_ids(gallery_identities, "gallery_identities")
    relevant = _padded_groups(q, g)
    if exclude is None:
        return relevant
    exclude = np.asarray(exclude)
    if exclude.shape != q.shape:
        raise ValueError(f"exclude has shape {exclude.shape}, expected {q.shape}")
    keep = (relevant != exclude[:, None]) & (relevant >= 0)
    if not np.all(keep.any(axis=1)):
        raise ValueError("some query has no relevant gallery item left after exclusion")
    # Move kept entries to the left (stable), pad the rest.
    order = np.argsort(~keep, axis=1, kind="stable")
    packed = np.take_along_axis(np.where(keep, relevant, -1), order, axis=1)
    width = int(keep.sum(axis=1).max())
    return packed[:, :width].astype(np.int32)


def composed_relevance(target_ids: np.ndarray) -> np.ndarray:
    """Composed retrieval: the target image of each query, int32 [Q, 1]."""
    return _as_ids(target_ids, "target_ids").astype(np.int32)[:, None]


def relevance_mask(relevant_ids: np.ndarray, n_gallery: int) -> np.ndarray:
    """The boolean form of a padded relevance matrix: bool [Q, n_gallery]."""
    relevant_ids = validate_relevance(relevant_ids, n_gallery)
    mask = np.zeros((relevant_ids.shape[0], n_gallery), bool)
    rows, cols = np.nonzero(relevant_ids >= 0)
    mask[rows, relevant_ids[rows, cols]] = True
    return mask


def validate_relevance(relevant_ids: np.ndarray, n_gallery: int) -> np.ndarray:
    """Checks the padded format (2-D ints, ids in [0, n_gallery), -1 only as right padding,
    at least one id per row) and returns it as int32."""
    r = np.asarray(relevant_ids)
    if r.ndim != 2 or not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"relevant_ids must be a 2-D integer array, got {r.dtype} {r.shape}")
    if np.any(r >= n_gallery) or np.any(r < -1):
        raise ValueError(f"relevant_ids must lie in [0, {n_gallery}) or be -1 (padding)")
    valid = r >= 0
    if r.shape[1] and not np.all(valid[:, 0]):
        raise ValueError("every query needs at least one relevant id (first column)")
    if np.any(valid[:, 1:] & ~valid[:, :-1]):
        raise ValueError("-1 padding must come after the relevant ids of a row")
    return r.astype(np.int32)


def _as_ids(ids: np.ndarray, name: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    if len(ids) and ids.min() < 0:
        raise ValueError(f"{name} must be non-negative")
    return ids
