"""In-step guards: non-finite input rows and the collapse guard. Pure, jittable, no host sync.

Non-finite rows. A query whose inputs hold a NaN or an infinity cannot be answered, and left
in the batch it would turn every gradient into NaN (0 * NaN in the backward pass), even when
masked. :func:`mask_nonfinite_rows` swaps such rows for a copy of a finite valid row and marks
them invalid (like padding), so the rest of the batch still adapts; the step answers them with
a NaN score row.

Collapse guard. Adaptation can drift until every query retrieves the same few items. With
``d_t`` the fraction of distinct top-1 items among the valid queries of batch t,

  ema_t = d_t                              first batch after the start or a reset
  ema_t = a * ema_{t-1} + (1 - a) * d_t    otherwise (a = ``collapse_ema_decay``)

a reset to the source state fires when ``ema_t < collapse_min_distinct`` after at least
``collapse_warmup`` batches, and only while the guard is *armed*. A reset disarms it and
restarts the EMA; it re-arms once the EMA, measured on the restored model, is healthy again.
So a stream on which the source model itself looks collapsed gets one reset, not one every
few batches.

Degenerate batches. A batch whose valid rows are all identical is answered but not adapted
on (:func:`identical_rows`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any


class GuardState(NamedTuple):
    """State of the collapse guard.

    Attributes:
      ema: float32, EMA of the distinct top-1 fraction.
      seen: int32, batches in the EMA since the start or the last reset.
      armed: bool, whether a reset may fire.
    """

    ema: jax.Array
    seen: jax.Array
    armed: jax.Array


def init_guard() -> GuardState:
    """A fresh, armed guard with an empty EMA."""
    return GuardState(
        ema=jnp.ones((), jnp.float32),
        seen=jnp.zeros((), jnp.int32),
        armed=jnp.ones((), bool),
    )


def finite_rows(inputs: PyTree) -> jax.Array:
    """(B,) bool, true where every floating leaf of the row is finite (ints always are)."""
    leaves = jax.tree.leaves(inputs)
    rows = jnp.ones((leaves[0].shape[0],), bool)
    for x in leaves:
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.inexact):
            rows = rows & jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=1)
    return rows


def mask_nonfinite_rows(inputs: PyTree, valid: jax.Array) -> tuple[PyTree, jax.Array, jax.Array]:
    """Replaces non-finite rows by a finite valid row and marks them invalid.

    Args:
      inputs: the batch's inputs (any pytree, leading dimension B).
      valid: (B,) bool, the caller's mask.

    Returns:
      ``(inputs, valid, finite)``: inputs with every non-finite row (padding included)
      replaced by the first finite valid row (zeros if there is none), ``valid & finite``,
      and the (B,) ``finite`` mask. Finite rows are returned bit for bit.
    """
    finite = finite_rows(inputs)
    usable = valid & finite
    first = jnp.argmax(usable)
    any_usable = jnp.any(usable)

    def clean(x):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            return x
        filler = jnp.where(any_usable, x[first], jnp.zeros_like(x[first]))
        keep = finite.reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.where(keep, x, filler[None])

    return jax.tree.map(clean, inputs), usable, finite


def identical_rows(inputs: PyTree, valid: jax.Array) -> jax.Array:
    """True when there are two or more valid rows and all of them equal the first valid one.

    Such a batch (a frozen camera, a constant image repeated) carries no information for
    the batch-level losses and can give an outsized, one-sided gradient; the step answers it
    without adapting (``config.skip_degenerate_batches``).
    """
    first = jnp.argmax(valid)
    same = valid
    for x in jax.tree.leaves(inputs):
        x = jnp.asarray(x)
        equal = (x == x[first][None]).reshape(x.shape[0], -1).all(axis=1)
        same = same & equal
    return (jnp.sum(valid) >= 2) & jnp.all(same | ~valid)


def distinct_top1_fraction(top1: jax.Array, valid: jax.Array) -> jax.Array:
    """Distinct top-1 items among the valid rows, divided by their number (1 when none).

    ``d = |{top1_i : i valid}| / |{i valid}|`` with ``top1_i = argmax_j S_ij`` (B,) int;
    1/B means every query retrieves the same item. Cost: a sort of B integers.
    """
    top = jnp.sort(jnp.where(valid, top1.astype(jnp.int32), -1))
    new = jnp.concatenate([top[:1] >= 0, (top[1:] != top[:-1]) & (top[1:] >= 0)])
    count = jnp.sum(valid)
    return jnp.where(count > 0, jnp.sum(new) / jnp.maximum(count, 1), 1.0).astype(jnp.float32)


def update_guard(
    guard: GuardState,
    statistic: jax.Array,
    observed: jax.Array,
    *,
    min_distinct: float,
    decay: float,
    warmup: int,
) -> tuple[GuardState, jax.Array]:
    """One batch of the collapse guard (module docstring).

    Args:
      guard: the current :class:`GuardState`.
      statistic: this batch's distinct top-1 fraction ``d_t``.
      observed: bool scalar; false leaves the guard unchanged (no valid row, rolled back).
      min_distinct: the EMA level under which the model counts as collapsed.
      decay: the EMA's ``a``.
      warmup: batches the EMA must hold before a reset may fire.

    Returns:
      ``(guard, fire)``; when ``fire`` the caller restores the source state.
    """
    ema = jnp.where(guard.seen == 0, statistic, decay * guard.ema + (1.0 - decay) * statistic)
    seen = guard.seen + 1
    low = ema < min_distinct
    fire = observed & guard.armed & low & (seen >= warmup)
    updated = GuardState(
        ema=ema.astype(guard.ema.dtype),
        seen=jnp.where(fire, 0, seen).astype(guard.seen.dtype),
        armed=jnp.where(fire, False, guard.armed | ~low),
    )
    return optax.tree.where(observed, updated, guard), fire
