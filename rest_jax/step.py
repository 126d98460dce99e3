"""The online adaptation step: a pure ``(state, batch) -> (state, outputs)`` transition.

One call processes one batch of the stream: ``config.steps`` optimisation steps of the chosen
method inside a ``lax.scan``, the scores kept from the last step's forward (computed before
its update), the state carried to the next batch. Shapes are static along the stream (the
last batch is padded and carries a mask), so the jitted step compiles once. Frozen params,
the gallery and the initial state travel in :class:`StreamConstants`, never donated.

A batch that would leave the state non-finite (a NaN batch, say) is rolled back: the state
stays as it was, the batch is answered by the previous model, and ``rolled_back`` says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rest_jax import methods
from rest_jax.config import AdaptConfig
from rest_jax.decoupling import GradientDecouplingState, contrastive_reference, gradient_decoupling
from rest_jax.masked import l2_normalize
from rest_jax.methods.base import StepContext
from rest_jax.selection import combine

PyTree = Any
ApplyFn = Callable[[PyTree, Any], jax.Array]


class AdaptState(NamedTuple):
    """Everything that changes along the stream.

    Attributes:
      adapted: the adapted parameters (a pytree with ``None`` where params are frozen).
      opt_state: the optimiser state (over the adapted parameters only).
      method_state: the method's own state (TCR/REST: the anchor bank).
      batch_index: int32, number of batches processed.
      key: PRNG key (raw uint32 data, checkpointable).
      num_rollbacks: int32, batches whose update was rejected as non-finite.
    """

    adapted: PyTree
    opt_state: optax.OptState
    method_state: PyTree
    batch_index: jax.Array
    key: jax.Array
    num_rollbacks: jax.Array


class StreamConstants(NamedTuple):
    """What the step reads but never changes.

    Attributes:
      frozen: the frozen parameters (``None`` where params are adapted).
      gallery: (N, d) L2-normalised gallery embeddings.
      initial: the initial :class:`AdaptState` (reset target; episodic mode; SAR).
      source_inputs: clean query-modality inputs for the decoupling reference (or None).
      source_targets: their (n, d) gallery-modality embeddings (or None).
    """

    frozen: PyTree
    gallery: jax.Array
    initial: AdaptState
    source_inputs: Any = None
    source_targets: jax.Array | None = None


class StepOutputs(NamedTuple):
    """What a step returns besides the new state.

    Attributes:
      scores: (B, N) scores of the batch (rows of padded queries are meaningless).
      metrics: dict of (steps,) arrays, one entry per optimisation step.
      rolled_back: bool scalar, the update was rejected as non-finite.
    """

    scores: jax.Array
    metrics: dict[str, jax.Array]
    rolled_back: jax.Array


def make_optimizer(
    config: AdaptConfig, reference: PyTree | None = None
) -> optax.GradientTransformationExtraArgs:
    """AdamW (spec "Setting"), preceded by gradient decoupling when a reference is given.

    With ``config.decoupling`` off but a reference given, the transform runs in mode
    ``"none"``: it changes nothing and only records cos(g, r) (the obtuse-angle observation).
    """
    adamw = optax.adamw(
        config.learning_rate,
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        weight_decay=config.weight_decay,
    )
    if reference is None:
        if config.decoupling:
            raise ValueError("decoupling=True needs clean source pairs to compute the reference")
        return optax.with_extra_args_support(adamw)
    decouple = gradient_decoupling(
        reference,
        mode=config.decoupling_mode if config.decoupling else "none",
        beta=config.decoupling_beta,
        per_leaf=config.decoupling_per_leaf,
    )
    return optax.chain(decouple, adamw)


def decoupling_state(opt_state: optax.OptState) -> GradientDecouplingState | None:
    """The first :class:`GradientDecouplingState` inside an optimiser state, if any."""
    for node in jax.tree.leaves(
        opt_state, is_leaf=lambda x: isinstance(x, GradientDecouplingState)
    ):
        if isinstance(node, GradientDecouplingState):
            return node
    return None


def all_finite(tree: PyTree) -> jax.Array:
    """True when every floating leaf of ``tree`` is finite."""
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.ones((), bool)


def tree_select(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Leafwise ``where(pred, on_true, on_false)`` for a scalar predicate."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def make_encode(apply_fn: ApplyFn, frozen: PyTree) -> Callable[[PyTree, Any], jax.Array]:
    """``encode(adapted, inputs) = normalize(apply_fn(combine(adapted, frozen), inputs))``."""

    def encode(adapted, inputs):
        features = apply_fn(combine(adapted, frozen), inputs)
        return l2_normalize(features.astype(jnp.promote_types(features.dtype, jnp.float32)))

    return encode


def make_step(
    apply_fn: ApplyFn,
    config: AdaptConfig,
    optimizer: optax.GradientTransformationExtraArgs,
) -> Callable[[AdaptState, dict, StreamConstants], tuple[AdaptState, StepOutputs]]:
    """Builds the pure per-batch transition ``step(state, batch, constants)``.

    Args:
      apply_fn: the query encoder, ``apply_fn(params, inputs) -> (B, d)`` features.
      config: the run's configuration (``config.method`` picks the method).
      optimizer: from :func:`make_optimizer` (its reference, if any, lives in the state).

    Returns:
      ``step(state, batch, constants) -> (state, StepOutputs)`` where ``batch`` is a dict with
      ``"inputs"`` (leading dimension B) and ``"mask"`` ((B,) bool, true on real queries).
      Jit it with ``donate_argnums=0``.
    """
    method = methods.get(config.method)

    def step(state: AdaptState, batch: dict, constants: StreamConstants):
        encode = make_encode(apply_fn, constants.frozen)
        valid = jnp.asarray(batch["mask"], bool)
        start = state
        if config.episodic:
            start = state._replace(
                adapted=constants.initial.adapted, opt_state=constants.initial.opt_state
            )
        opt_state = start.opt_state
        if config.reference_refresh_every:
            opt_state = refresh_reference(
                apply_fn, config, constants, start.adapted, opt_state, start.batch_index
            )
        key, batch_key = jax.random.split(start.key)
        ctx = StepContext(
            encode=encode,
            inputs=batch["inputs"],
            valid=valid,
            gallery=constants.gallery,
            batch_index=start.batch_index,
            key=batch_key,
            optimizer=optimizer,
            config=config,
            initial=constants.initial,
        )

        def one_step(carry, step_index):
            adapted, opt, mstate, _ = carry
            out = method.inner_step(ctx, adapted, opt, mstate, step_index)
            metrics = dict(out.metrics)
            dstate = decoupling_state(out.opt_state)
            if dstate is not None:
                metrics["reference_cosine"] = dstate.cosine
                metrics["projected"] = dstate.projected
            scores = out.scores.astype(score_dtype)
            return (out.adapted, out.opt_state, out.method_state, scores), metrics

        batch_size = valid.shape[0]
        score_dtype = jnp.promote_types(constants.gallery.dtype, jnp.float32)
        scores0 = jnp.zeros((batch_size, constants.gallery.shape[0]), score_dtype)
        (adapted, opt_state, mstate, scores), metrics = jax.lax.scan(
            one_step,
            (start.adapted, opt_state, start.method_state, scores0),
            jnp.arange(config.steps),
        )
        candidate = AdaptState(
            adapted, opt_state, mstate, start.batch_index + 1, key, start.num_rollbacks
        )
        if not config.rollback_nonfinite:
            return candidate, StepOutputs(scores, metrics, jnp.zeros((), bool))

        ok = all_finite((adapted, opt_state, mstate)) & all_finite(scores)
        kept = state._replace(batch_index=state.batch_index + 1, key=key)
        new_state = tree_select(ok, candidate, kept)
        new_state = new_state._replace(num_rollbacks=state.num_rollbacks + (~ok).astype(jnp.int32))
        scores = jax.lax.cond(
            ok,
            lambda: scores,
            lambda: (encode(state.adapted, batch["inputs"]) @ constants.gallery.T).astype(
                scores.dtype
            ),
        )
        return new_state, StepOutputs(scores, metrics, ~ok)

    return step


def refresh_reference(apply_fn, config, constants, adapted, opt_state, batch_index):
    """Every R batches (not batch 0), recomputes the reference at the current params."""
    if constants.source_inputs is None:
        raise ValueError("reference_refresh_every needs source pairs")
    due = (batch_index > 0) & (batch_index % config.reference_refresh_every == 0)
    current = decoupling_state(opt_state).reference
    reference = jax.lax.cond(
        due,
        lambda: contrastive_reference(
            apply_fn,
            adapted,
            constants.frozen,
            constants.source_inputs,
            constants.source_targets,
            config.reference_temperature,
        ),
        lambda: current,
    )
    return optax.tree.set(opt_state, reference=reference)
