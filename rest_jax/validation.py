"""Input checks at the API boundary, on host arrays, outside the jitted hot path.

Every error names the problem (shape, dtype, non-finite values, empty input, K too large...).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from rest_jax.config import AdaptConfig


def _as_float_matrix(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (N, d) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{what} must have a floating dtype, got {x.dtype}")
    return x


def check_gallery(gallery: Any, config: AdaptConfig | None = None) -> np.ndarray:
    """Checks a gallery embedding matrix; returns it as a numpy array."""
    gallery = _as_float_matrix(jax.device_get(gallery), "gallery")
    if gallery.shape[0] == 0:
        raise ValueError("the gallery is empty (0 items)")
    if gallery.shape[1] == 0:
        raise ValueError("gallery embeddings have dimension 0")
    if not np.all(np.isfinite(gallery)):
        bad = np.unique(np.nonzero(~np.isfinite(gallery))[0])
        raise ValueError(f"the gallery has non-finite values in rows {bad[:10].tolist()}")
    if config is not None and config.num_candidates > gallery.shape[0]:
        raise ValueError(
            f"num_candidates (K={config.num_candidates}) is larger than the gallery "
            f"({gallery.shape[0]} items)"
        )
    return gallery


def check_source(source: tuple[Any, Any], dim: int) -> tuple[Any, np.ndarray]:
    """Checks clean source pairs ``(inputs, targets)`` for the decoupling reference."""
    inputs, targets = source
    targets = _as_float_matrix(jax.device_get(targets), "source targets")
    n_inputs = jax.tree.leaves(inputs)[0].shape[0]
    if n_inputs != targets.shape[0] or n_inputs == 0:
        raise ValueError(
            f"source pairs must be non-empty and paired: {n_inputs} inputs, "
            f"{targets.shape[0]} targets"
        )
    if targets.shape[1] != dim:
        raise ValueError(f"source targets have dimension {targets.shape[1]}, the gallery has {dim}")
    if not np.all(np.isfinite(targets)):
        raise ValueError("source targets have non-finite values")
    return inputs, targets
