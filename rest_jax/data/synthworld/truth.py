"""Truth checking (does a caption describe an image?) and the ambiguity ceiling."""

from __future__ import annotations

import numpy as np

from rest_jax.data.synthworld.scenes import grid_cells, relation_table
from rest_jax.data.synthworld.world_config import WorldConfig


def caption_consistency(
    captions: dict[str, np.ndarray],
    source: dict[str, np.ndarray],
    gallery: dict[str, np.ndarray],
    config: WorldConfig,
) -> np.ndarray:
    """Which gallery images each caption describes truthfully.

    A caption states, for each mentioned object, the attributes it names (shape, colour, size,
    grid cell, read from the object it was written about in ``source``), a relation between its
    first two mentions, the number of objects, and the background kind/tone. It is true of an
    image if distinct valid objects of that image satisfy all of it.

    Args:
      captions: the caption meaning arrays (CAPTION_KEYS) of a split.
      source: scene arrays of the images the captions were written for.
      gallery: scene arrays of the images to test (often the same split).
      config: the world config (relation thresholds).

    Returns:
      bool [C, G].
    """
    rel_table = relation_table(gallery, config)
    g_rows, g_cols = grid_cells(gallery["object_x"], gallery["object_y"])
    s_rows, s_cols = grid_cells(source["object_x"], source["object_y"])
    valid = gallery["object_valid"]
    m = valid.shape[1]
    distinct = ~np.eye(m, dtype=bool)
    out = np.zeros((len(captions["caption_image_ids"]), len(valid)), bool)
    for c, img in enumerate(captions["caption_image_ids"].tolist()):
        ok = np.ones(len(valid), bool)
        if captions["caption_count"][c] >= 0:
            ok &= gallery["n_objects"] == captions["caption_count"][c]
        if captions["caption_says_background_kind"][c]:
            ok &= gallery["background_kind"] == source["background_kind"][img]
        if captions["caption_says_background_tone"][c]:
            ok &= gallery["background_tone"] == source["background_tone"][img]
        matches = []
        for k, slot in enumerate(captions["caption_objects"][c].tolist()):
            if slot < 0:
                break
            match = valid.copy()
            if captions["caption_says_shape"][c, k]:
                match &= gallery["object_shape"] == source["object_shape"][img, slot]
            if captions["caption_says_colour"][c, k]:
                match &= gallery["object_colour"] == source["object_colour"][img, slot]
            if captions["caption_says_size"][c, k]:
                match &= gallery["object_size"] == source["object_size"][img, slot]
            if captions["caption_says_position"][c, k]:
                match &= (g_rows == s_rows[img, slot]) & (g_cols == s_cols[img, slot])
            matches.append(match)
        if len(matches) == 1:
            ok &= matches[0].any(axis=1)
        elif len(matches) >= 2:
            pair = matches[0][:, :, None] & matches[1][:, None, :] & distinct
            rel = captions["caption_relation"][c]
            if rel >= 0:
                pair &= rel_table[:, rel]
            if len(matches) == 2:
                ok &= pair.any(axis=(1, 2))
            else:
                triple = pair[:, :, :, None] & matches[2][:, None, None, :]
                triple &= distinct[None, :, None, :] & distinct[None, None, :, :]
                ok &= triple.any(axis=(1, 2, 3))
        out[c] = ok
    return out


def oracle_recall_at_1(consistency: np.ndarray, caption_image_ids: np.ndarray) -> dict[str, float]:
    """Expected R@1 (percent) of the Bayes-optimal model that knows which captions are true.

    With k_c the number of gallery images caption c is true of, the posterior that c was
    written for image j is consistency[c, j] / k_c. Ranking by it, ties in random order:
    t2i R@1 = mean_c 1 / k_c; i2t R@1 = mean_j |own captions among the top-scored| / |top-scored|,
    the top-scored being the captions true of j with the smallest k_c. This is the ceiling that
    caption ambiguity leaves to any model.

    Args:
      consistency: bool [C, N] from ``caption_consistency`` (gallery = the captions' own images).
      caption_image_ids: int [C], the image each caption was written for.

    Returns:
      {"i2t_r1": ..., "t2i_r1": ...} in percent.
    """
    consistency = np.asarray(consistency, bool)
    caption_image_ids = np.asarray(caption_image_ids)
    own = np.zeros_like(consistency)
    own[np.arange(len(caption_image_ids)), caption_image_ids] = True
    if not np.all(consistency[own]):
        raise ValueError("some caption is not consistent with its own image")
    k = consistency.sum(axis=1)
    t2i = np.mean(1.0 / k)
    k_true = np.where(consistency, k[:, None], np.iinfo(np.int64).max)
    top = consistency & (k_true == k_true.min(axis=0, keepdims=True))
    i2t = np.mean((top & own).sum(axis=0) / top.sum(axis=0))
    return {"i2t_r1": float(100 * i2t), "t2i_r1": float(100 * t2i)}
