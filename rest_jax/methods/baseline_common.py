"""Pieces shared by the baseline methods (docs/method.md section 6).

- Whole-gallery logits ``Z = Q G^T / tau_b`` (B, N): the baselines' losses are softmaxes over
  the whole gallery, so they always form this matrix.
- Entropy filters that count valid rows only: a filter that keeps ``int(fraction * B)`` queries
  uses ``n_valid`` in place of ``B`` (a Python table ``int(fraction * n)`` for ``n = 0..B``,
  indexed with ``n_valid``), so a padded batch selects what the unpadded one would.
- An optimiser step that can be skipped (a traced boolean): the reference methods make no step
  when their filters keep no query.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rest_jax.methods.base import Method, StepContext, gradient_update, no_state
from rest_jax.numerics import stable_rank, valid_fraction_count

PyTree = Any


def forward(ctx: StepContext, adapted: PyTree, inputs: Any = None):
    """Encodes ``inputs`` (default: the batch) at ``adapted``.

    Returns:
      ``(queries (B, d), logits Z = Q G^T / tau_b (B, N))``.
    """
    queries = ctx.encode(adapted, ctx.inputs if inputs is None else inputs)
    return queries, (queries @ ctx.gallery.T) / ctx.config.baseline_temperature


ObjectiveFn = Callable[[StepContext, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
"""``objective(ctx, logits) -> (loss, metrics)`` of the (B, N) whole-gallery logits."""


def entropy_method(objective: ObjectiveFn) -> Method:
    """A stateless :class:`Method` whose loss is a function of the whole-gallery logits
    ``Z = Q G^T / tau_b``: one plain gradient step on ``objective(ctx, Z)`` per inner step."""

    def inner_step(ctx, adapted, opt_state, method_state, step_index):
        del step_index

        def loss_fn(params):
            queries, logits = forward(ctx, params)
            loss, metrics = objective(ctx, logits)
            return loss, (queries, method_state, metrics)

        return gradient_update(ctx, adapted, opt_state, loss_fn)

    return Method(no_state, inner_step)


class EntropyFilter(NamedTuple):
    """Queries kept by an entropy filter.

    Attributes:
      selected: (B,) bool, kept queries (never a padded row).
      threshold: scalar entropy threshold of the filter (0 when it keeps nobody).
      count: int32 scalar, ``int(fraction * n_valid)``.
    """

    selected: jax.Array
    threshold: jax.Array
    count: jax.Array


def lowest_entropy(entropies: jax.Array, valid: jax.Array, fraction: float) -> EntropyFilter:
    """The ``k = int(fraction * n_valid)`` valid queries of lowest entropy (EATA, SAR).

    Exactly ``k`` are kept (ties broken by position); ``threshold`` is the largest kept entropy,
    the SAR threshold ``thr`` of its second filter.
    """
    h = jax.lax.stop_gradient(entropies)
    k = valid_fraction_count(valid, fraction)
    rank = stable_rank(jnp.where(valid, h, jnp.inf))
    selected = valid & (rank < k)
    threshold = jnp.where(k > 0, jnp.max(jnp.where(selected, h, -jnp.inf)), 0).astype(h.dtype)
    return EntropyFilter(selected, threshold, k)


def strictly_below_kth(entropies: jax.Array, valid: jax.Array, fraction: float) -> EntropyFilter:
    """Valid queries with ``H < h_(k+1)``, the (k+1)-th lowest valid entropy (DeYO).

    With ``k = int(fraction * n_valid)`` this keeps ``k`` queries when the entropies are
    distinct; queries tied at the boundary are all left out. ``k = n_valid`` keeps every one.
    """
    h = jax.lax.stop_gradient(entropies)
    k = valid_fraction_count(valid, fraction)
    ordered = jnp.sort(jnp.where(valid, h, jnp.inf))
    kth = ordered[jnp.minimum(k, h.shape[0] - 1)]
    threshold = jnp.where(k < jnp.sum(valid), kth, jnp.inf)
    selected = valid & (h < threshold)
    return EntropyFilter(selected, jnp.where(jnp.isfinite(threshold), threshold, 0), k)


def guarded_update(
    ctx: StepContext,
    adapted: PyTree,
    opt_state: optax.OptState,
    grads: PyTree,
    apply: jax.Array,
) -> tuple[PyTree, optax.OptState]:
    """One optimiser step on ``grads`` when ``apply`` is true; params and state unchanged else."""
    updates, new_opt_state = ctx.optimizer.update(grads, opt_state, adapted)
    new_adapted = optax.apply_updates(adapted, updates)
    return optax.tree.where(apply, (new_adapted, new_opt_state), (adapted, opt_state))


def count(mask: jax.Array) -> jax.Array:
    """Number of true entries as int32."""
    return jnp.sum(mask).astype(jnp.int32)
