"""Input checks at the API boundary, on the host, outside the jitted hot path.

Every error names the problem (shape, dtype, non-finite values, empty input, K too large...).

A stream batch is checked against an *input spec*: a pytree of ``jax.ShapeDtypeStruct``
holding each input leaf's shape without the batch dimension and its dtype, given at
``Adapter.create(input_spec=...)`` or recorded from the first batch. Shapes and dtypes are
metadata, so these checks cost nothing and never sync. Values (the mask's "no valid row",
non-finite inputs under ``nonfinite_inputs="raise"``) are checked only for host (numpy)
arrays: reading a device array's values would wait for the device. Device inputs are still
safe: the jitted step masks non-finite rows and keeps the state when no row is usable.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from rest_jax.config import AdaptConfig
from rest_jax.refinement import check_num_candidates


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
    if config is not None:
        check_num_candidates(config.num_candidates, gallery.shape[0])
    return gallery


def _nonfinite_message(what: str, bad: np.ndarray) -> str:
    more = " ..." if bad.size > 10 else ""
    return f"{what} have non-finite values (NaN or inf) in rows {bad[:10].tolist()}{more}"


def check_source(source: tuple[Any, Any], dim: int) -> tuple[Any, np.ndarray]:
    """Checks clean source pairs ``(inputs, targets)`` for the decoupling reference.

    The pairs are read once, at creation: their values are checked wherever they live (a
    non-finite source pair would make the reference gradient, and every update it steers,
    NaN).

    Args:
      source: ``(inputs, targets)``: query inputs (any pytree with a leading row axis) and
        their (N, d) target embeddings.
      dim: the gallery's embedding dimension.

    Returns:
      ``(inputs, targets)``, targets as a numpy array.

    Raises:
      ValueError / TypeError: unpaired or empty pairs, a wrong target dimension or dtype,
        non-finite inputs or targets (naming the rows).
    """
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
    bad = nonfinite_rows(jax.device_get(inputs))
    if bad.size:
        raise ValueError(_nonfinite_message("source inputs", bad))
    bad = nonfinite_rows(targets)
    if bad.size:
        raise ValueError(_nonfinite_message("source targets", bad))
    return inputs, targets


def _where(index: int | None) -> str:
    return "batch" if index is None else f"batch {index}"


def _is_host(x: Any) -> bool:
    return isinstance(x, np.ndarray | np.generic | int | float | bool | list | tuple)


def _dtype_kind(dtype) -> str:
    """'f' floating (and complex), 'i' integer, 'b' bool; raises on anything else."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.inexact):
        return "f"
    if np.issubdtype(dtype, np.integer):
        return "i"
    if dtype == np.bool_:
        return "b"
    raise TypeError(f"unsupported input dtype {dtype} (expected a numeric or bool array)")


def input_spec_of(inputs: Any) -> Any:
    """The spec of a batch's inputs: per leaf, its shape without the batch dim and dtype."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x)[1:], _dtype_of(x)), inputs)


def _dtype_of(x: Any):
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def check_inputs(inputs: Any, spec: Any, index: int | None = None) -> int:
    """Checks a batch's inputs against a spec (rank, trailing dims, dtype kind, batch size).

    Args:
      inputs: the batch's inputs (any pytree of arrays with a leading batch dimension).
      spec: the expected spec (see :func:`input_spec_of`), or None to check only the
        batch dimension.
      index: the batch's position in the stream, for messages.

    Returns:
      The batch size B.

    Raises:
      ValueError: wrong structure, rank or trailing dimensions, disagreeing or zero batch size.
      TypeError: an unsupported dtype or a dtype kind other than the spec's.
    """
    where = _where(index)
    leaves, structure = jax.tree.flatten(inputs)
    if not leaves:
        raise ValueError(f"{where}: the inputs are empty (no array)")
    if spec is not None:
        spec_leaves, spec_structure = jax.tree.flatten(spec)
        if structure != spec_structure:
            raise ValueError(
                f"{where}: the inputs' structure {structure} differs from the expected "
                f"{spec_structure}"
            )
    else:
        spec_leaves = [None] * len(leaves)
    sizes = set()
    for i, (x, s) in enumerate(zip(leaves, spec_leaves)):
        name = "inputs" if len(leaves) == 1 else f"inputs leaf {i}"
        shape = np.shape(x)
        if len(shape) == 0:
            raise ValueError(f"{where}: {name} is a scalar; expected a leading batch dimension")
        kind = _dtype_kind(_dtype_of(x))
        if s is not None:
            if len(shape) != len(s.shape) + 1:
                raise ValueError(
                    f"{where}: {name} has rank {len(shape)} (shape {shape}); expected rank "
                    f"{len(s.shape) + 1}: (B, {', '.join(map(str, s.shape))})"
                )
            if tuple(shape[1:]) != tuple(s.shape):
                raise ValueError(
                    f"{where}: {name} has feature shape {tuple(shape[1:])}; expected "
                    f"{tuple(s.shape)} (full shape {shape})"
                )
            if kind != _dtype_kind(s.dtype):
                raise TypeError(
                    f"{where}: {name} has dtype {np.dtype(_dtype_of(x))}; expected "
                    f"{np.dtype(s.dtype)} (or another dtype of the same kind)"
                )
        sizes.add(shape[0])
    if len(sizes) > 1:
        raise ValueError(f"{where}: the input leaves disagree on the batch size: {sorted(sizes)}")
    (batch_size,) = sizes
    if batch_size == 0:
        raise ValueError(f"{where}: the batch has 0 rows")
    return batch_size


def check_mask(mask: Any, batch_size: int, index: int | None = None) -> Any:
    """Checks a batch's (B,) validity mask; returns it (numpy bool when given on the host).

    A host mask that marks no valid row is an error; a device mask is not read (no sync).
    """
    where = _where(index)
    if mask is None:
        raise ValueError(f"{where}: the batch has no 'mask' ((B,) bool, true on real queries)")
    shape = np.shape(mask)
    if shape != (batch_size,):
        raise ValueError(f"{where}: the mask has shape {shape}; expected ({batch_size},)")
    kind = _dtype_kind(_dtype_of(mask))
    if kind == "f":
        raise TypeError(f"{where}: the mask must be bool (or 0/1 integers), got {_dtype_of(mask)}")
    if not _is_host(mask):
        return mask
    mask = np.asarray(mask)
    if kind == "i" and not np.all((mask == 0) | (mask == 1)):
        raise ValueError(f"{where}: an integer mask must hold only 0 and 1")
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError(f"{where}: the mask marks no valid row")
    return mask


def nonfinite_rows(inputs: Any, mask: np.ndarray | None = None) -> np.ndarray | None:
    """Indices of the (valid) rows with a non-finite value, over host leaves only.

    Returns None when some floating leaf lives on a device (its values are not read).
    """
    bad = None
    for x in jax.tree.leaves(inputs):
        if not np.issubdtype(np.dtype(_dtype_of(x)), np.inexact):
            continue
        if not _is_host(x):
            return None
        x = np.asarray(x)
        rows = ~np.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
        bad = rows if bad is None else bad | rows
    if bad is None:
        return np.zeros(0, np.int64)
    if mask is not None and _is_host(mask):
        bad = bad & np.asarray(mask, bool)
    return np.nonzero(bad)[0]


def check_batch(
    batch: Any, spec: Any, *, nonfinite: str = "mask", index: int | None = None
) -> dict:
    """Checks one stream batch; returns ``{"inputs", "mask"}`` ready for the jitted step.

    Args:
      batch: a dict with ``"inputs"`` and ``"mask"`` (other keys, like ``"ids"``, are ignored).
      spec: the expected input spec, or None (only the batch dimension is checked).
      nonfinite: the ``nonfinite_inputs`` policy; ``"raise"`` reads host values.
      index: the batch's position in the stream, for messages.

    Raises:
      ValueError / TypeError naming the batch and the problem.
    """
    where = _where(index)
    if not isinstance(batch, dict) or "inputs" not in batch:
        raise ValueError(f"{where}: a batch must be a dict with 'inputs' and 'mask'")
    batch_size = check_inputs(batch["inputs"], spec, index)
    mask = check_mask(batch.get("mask"), batch_size, index)
    if nonfinite == "raise":
        bad = nonfinite_rows(batch["inputs"], mask)
        if bad is not None and bad.size:
            raise ValueError(
                f"{where}: non-finite values (NaN or inf) in rows {bad[:10].tolist()}"
                f"{' ...' if bad.size > 10 else ''} (nonfinite_inputs='raise')"
            )
    return {"inputs": batch["inputs"], "mask": mask}


def check_encoder_output(shape: tuple[int, ...], batch_size: int, dim: int) -> None:
    """Checks the encoder's output shape (from ``jax.eval_shape``) against the gallery."""
    if len(shape) != 2 or shape[0] != batch_size:
        raise ValueError(
            f"the query encoder must return (B, d) features; for B={batch_size} it returns "
            f"shape {tuple(shape)}"
        )
    if shape[1] != dim:
        raise ValueError(
            f"the query encoder returns {shape[1]}-dimensional features but the gallery has "
            f"dimension {dim}"
        )
