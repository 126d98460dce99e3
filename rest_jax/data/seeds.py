"""Checks on the seeds and sample ids that key the per-sample corruption generators."""

from __future__ import annotations

import numpy as np


def check_non_negative_int(value, what: str) -> int:
    """``value`` as an int; TypeError unless it is an integer (not a bool), ValueError if < 0."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{what} must be a non-negative int, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be non-negative, got {value}")
    return int(value)
