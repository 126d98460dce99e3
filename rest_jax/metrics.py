"""Retrieval metrics: Recall@K and mAP with several relevant items per query (docs/method.md 7.1).

Relevance is a padded index matrix ``relevant[i] = gallery ids relevant to query i, -1
padding``, or a vector ``relevant[i] = the one gallery id relevant to query i``. Ranks follow
a stable descending sort of the scores: on equal scores the lower gallery index ranks first.
The position of item j for query i is

  pos_ij = #{l : s_il > s_ij} + #{l < j : s_il = s_ij}

Recall@K = 100 * mean_i [min_k pos_i(rel_k) < K];
mAP = 100 * mean_i mean_k k / (pos_(k) + 1) over the sorted positions of i's relevant items.
A query whose score row is not finite (left unanswered) counts as a miss at every K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def relevant_positions(scores: np.ndarray, relevant: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Ranked positions (0 = best) of each relevant item; -1 where ``relevant`` is padding.

    Args:
      scores: (Q, N) scores.
      relevant: (Q, R) int gallery indices, -1 padded.
      chunk: queries per chunk (bounds memory to chunk * N * R).
    """
    scores = np.asarray(scores)
    relevant = np.asarray(relevant)
    if scores.ndim != 2 or relevant.ndim != 2 or scores.shape[0] != relevant.shape[0]:
        raise ValueError(
            f"scores (Q, N) and relevant (Q, R) must agree on Q: {scores.shape} vs {relevant.shape}"
        )
    if relevant.max(initial=-1) >= scores.shape[1]:
        raise ValueError(f"relevant ids exceed the gallery size {scores.shape[1]}")
    out = np.full(relevant.shape, -1, np.int64)
    index = np.arange(scores.shape[1])
    for start in range(0, scores.shape[0], chunk):
        s = scores[start : start + chunk]
        rel = relevant[start : start + chunk]
        ids = np.maximum(rel, 0)
        s_rel = np.take_along_axis(s, ids, axis=1)[:, :, None]  # (q, R, 1)
        higher = (s[:, None, :] > s_rel).sum(-1)
        tied_before = ((s[:, None, :] == s_rel) & (index[None, None, :] < ids[:, :, None])).sum(-1)
        pos = higher + tied_before
        # A query left unanswered (a non-finite score row) ranks nothing: every item misses.
        unanswered = ~np.all(np.isfinite(s), axis=1)
        pos = np.where(unanswered[:, None], np.iinfo(np.int32).max, pos)
        out[start : start + chunk] = np.where(rel >= 0, pos, -1)
    return out


def relevance_matrix(relevant: np.ndarray) -> np.ndarray:
    """The (num_queries, R) relevance of either form: one id per query, or -1 padded id lists.

    Args:
      relevant: (num_queries,) the gallery id relevant to each query, or (num_queries, R)
        the gallery ids relevant to each query, -1 padded.

    Returns:
      (num_queries, R) integer ids, -1 padded (R = 1 for one id per query).

    Raises:
      ValueError: another number of dimensions, a non-integer dtype, or an id below -1.
    """
    relevant = np.asarray(relevant)
    if relevant.ndim not in (1, 2):
        raise ValueError(
            f"relevant must be (num_queries,) gallery ids, one per query, or (num_queries, R) "
            f"gallery ids padded with -1; got a {relevant.ndim}-D array of shape {relevant.shape}"
        )
    if not np.issubdtype(relevant.dtype, np.integer):
        raise ValueError(f"relevant must hold integer gallery ids, got dtype {relevant.dtype}")
    if relevant.size and relevant.min() < -1:
        raise ValueError(
            f"relevant ids must be gallery indices (-1 is the only padding value), got "
            f"{relevant.min()}"
        )
    return relevant[:, None] if relevant.ndim == 1 else relevant


def retrieval_metrics(
    scores: np.ndarray,
    relevant: np.ndarray,
    query_ids: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K (percent) and mAP (percent) of a set of queries.

    Args:
      scores: (Q, N) scores, one row per query, in any order (e.g. stream order).
      relevant: per query id, (num_queries,) its one relevant gallery id, or
        (num_queries, R) its relevant gallery ids, -1 padded.
      query_ids: (Q,) the query id of each score row (default: row i is query i).
      ks: the K of Recall@K.

    Returns:
      ``{"r1": ..., "r5": ..., "r10": ..., "map": ...}`` in percent.

    Raises:
      ValueError: scores not (Q, N) or empty; relevant of another shape or dtype (see
        :func:`relevance_matrix`), ids beyond the gallery, a query without a relevant id;
        query_ids not Q integers in range; without query_ids, Q different from num_queries.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (Q, N), one row per query, got shape {scores.shape}")
    if scores.shape[0] == 0:
        raise ValueError("no query to evaluate")
    relevant = relevance_matrix(relevant)
    if query_ids is not None:
        query_ids = np.asarray(query_ids)
        if query_ids.shape != scores.shape[:1] or not np.issubdtype(query_ids.dtype, np.integer):
            raise ValueError(
                f"query_ids must be (Q,) = ({scores.shape[0]},) integers, one per score row; "
                f"got shape {query_ids.shape}, dtype {query_ids.dtype}"
            )
        if query_ids.min() < 0 or query_ids.max() >= relevant.shape[0]:
            raise ValueError(
                f"query_ids must be in 0..{relevant.shape[0] - 1} (the rows of relevant), got "
                f"{query_ids.min()}..{query_ids.max()}"
            )
        relevant = relevant[query_ids]
    elif relevant.shape[0] != scores.shape[0]:
        raise ValueError(
            f"relevant has {relevant.shape[0]} queries but there are {scores.shape[0]} score "
            f"rows; pass query_ids to say which query each row answers"
        )
    if np.any((relevant >= 0).sum(1) == 0):
        raise ValueError("every query needs at least one relevant item")
    pos = relevant_positions(scores, relevant)
    valid = pos >= 0
    best = np.where(valid, pos, np.iinfo(np.int64).max).min(1)
    out = {f"r{k}": float(100.0 * np.mean(best < k)) for k in ks}
    sorted_pos = np.sort(np.where(valid, pos, np.iinfo(np.int64).max), axis=1)
    k = np.arange(1, pos.shape[1] + 1)[None, :]
    valid_sorted = np.arange(pos.shape[1])[None, :] < valid.sum(1, keepdims=True)
    precision = np.where(valid_sorted, k / (np.where(valid_sorted, sorted_pos, 0) + 1), 0.0)
    ap = precision.sum(1) / valid.sum(1)
    out["map"] = float(100.0 * ap.mean())
    return out
