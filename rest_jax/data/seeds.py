"""Checks on the seeds, sample ids and severities that key the per-sample corruption generators."""

from __future__ import annotations

import numpy as np


def check_non_negative_int(value, what: str) -> int:
    """``value`` as an int; TypeError unless it is an integer (not a bool), ValueError if < 0."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{what} must be a non-negative int, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be non-negative, got {value}")
    return int(value)


def check_severity(severity) -> int:
    """``severity`` as an int; TypeError unless it is an integer (not a bool), ValueError
    unless it is 1-5 (the corruption severities)."""
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer):
        raise TypeError(f"severity must be an int in 1..5, got {severity!r}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be in 1..5, got {severity}")
    return int(severity)


def check_sample_ids(sample_ids, n: int, item: str = "clip") -> np.ndarray:
    """int64 ``(n,)`` sample ids: ``0 .. n-1`` for None, else one non-negative id per ``item``.

    Raises:
      ValueError: not 1-D, not ``n`` ids, or a negative id. TypeError: a non-integer id.
    """
    if sample_ids is None:
        return np.arange(n, dtype=np.int64)
    if np.ndim(sample_ids) != 1 or len(sample_ids) != n:
        raise ValueError(
            f"sample_ids must be a 1-D sequence of {n} ids (one per {item}), "
            f"got shape {np.shape(sample_ids)}"
        )
    ids = [check_non_negative_int(i, "sample id") for i in np.asarray(sample_ids).tolist()]
    return np.asarray(ids, np.int64)
