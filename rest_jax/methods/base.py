"""What every adaptation method provides to the step engine, and the shared gradient update.

A method is a :class:`Method`, a pair of pure functions in the manner of optax's
``GradientTransformation``: ``init`` builds its own state (bank, running means, EMAs...)
and ``inner_step`` performs one optimisation step on a batch, returning the batch's query
embeddings from that step's forward (computed before the update) and scalar metrics. The
step engine turns the last step's embeddings into the batch's answer (scores or top-K).
:func:`rest_jax.methods.baseline_common.entropy_method` builds the stateless methods
whose loss is a function of the whole-gallery logits (tent, read, shot).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

from rest_jax import retrieval
from rest_jax.config import AdaptConfig

PyTree = Any


class StepContext(NamedTuple):
    """Everything a method may read while it adapts on one batch.

    Attributes:
      encode: ``encode(adapted, inputs) -> (B, d)`` L2-normalised queries.
      inputs: the batch's query inputs (leading dimension B).
      valid: (B,) bool, false on padded rows.
      gallery: (N, d) L2-normalised gallery embeddings.
      batch_index: int32 scalar, how many batches came before this one.
      key: a PRNG key for this batch.
      optimizer: the optax transform that turns gradients into updates.
      config: the run's :class:`AdaptConfig`.
      initial: the initial ``AdaptState`` (for methods that reset to the source state).
      top_k: ``top_k(queries, k) -> (values, ids)`` (B, k) over the gallery, chunked or sharded
        as configured (rest_jax/retrieval.py); use it where only a top-K is needed.
    """

    encode: Callable[[PyTree, Any], jax.Array]
    inputs: Any
    valid: jax.Array
    gallery: jax.Array
    batch_index: jax.Array
    key: jax.Array
    optimizer: optax.GradientTransformationExtraArgs
    config: AdaptConfig
    initial: Any
    top_k: Callable[[jax.Array, int], tuple[jax.Array, jax.Array]] | None = None

    def gallery_top_k(self, queries: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
        """``(values, ids)`` (B, k) of the best gallery items: ``top_k``, or one plain search."""
        if self.top_k is None:
            return retrieval.top_k(queries, self.gallery, k)
        return self.top_k(queries, k)


class InnerResult(NamedTuple):
    """The outcome of one optimisation step (``queries``: (B, d), before the update)."""

    adapted: PyTree
    opt_state: optax.OptState
    method_state: PyTree
    queries: jax.Array
    metrics: dict[str, jax.Array]


InitFn = Callable[..., PyTree]
"""``init(config, *, dim, dtype, num_gallery) -> method_state``."""
InnerStepFn = Callable[[StepContext, PyTree, optax.OptState, PyTree, jax.Array], InnerResult]
"""``inner_step(ctx, adapted, opt_state, method_state, step_index) -> InnerResult``."""


class Method(NamedTuple):
    """An adaptation method (module docstring).

    Attributes:
      init: ``init(config, *, dim, dtype, num_gallery) -> method_state``: ``dim`` and
        ``dtype`` are the gallery's embedding size and dtype, ``num_gallery`` its size N.
      inner_step: ``inner_step(ctx, adapted, opt_state, method_state, step_index)``: one
        optimisation step on ``ctx``'s batch, an :class:`InnerResult`.
    """

    init: InitFn
    inner_step: InnerStepFn


def no_state(config: AdaptConfig, *, dim: int, dtype, num_gallery: int | None = None) -> tuple:
    """The ``init`` of a stateless method: an empty state."""
    del config, dim, dtype, num_gallery
    return ()


LossFn = Callable[[PyTree], tuple[jax.Array, tuple[jax.Array, PyTree, dict[str, jax.Array]]]]


def gradient_update(
    ctx: StepContext, adapted: PyTree, opt_state: optax.OptState, loss_fn: LossFn
) -> InnerResult:
    """One optimiser step on ``loss_fn(adapted) -> (loss, (queries, method_state, metrics))``."""
    (loss, (queries, method_state, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        adapted
    )
    updates, opt_state = ctx.optimizer.update(grads, opt_state, adapted)
    adapted = optax.apply_updates(adapted, updates)
    return InnerResult(adapted, opt_state, method_state, queries, {"loss": loss, **metrics})
