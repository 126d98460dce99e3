"""The online adaptation step: a pure ``(state, batch) -> (state, outputs)`` transition.

One call processes one batch of the stream: ``config.steps`` optimisation steps of the chosen
method inside a ``lax.scan``, the batch answered from the last step's query embeddings
(computed before its update) as (B, N) scores or, with ``config.output_top_k``, a top-K
searched chunk by chunk (``config.gallery_chunk_size``) or shard by shard (a mesh), the state
carried to the next batch. Shapes are static along the stream (the
last batch is padded and carries a mask), so the jitted step compiles once. Frozen params,
the gallery and the initial state travel in :class:`StreamConstants`, never donated.

Robustness, all inside the jitted step (no host sync), in this order:

1. Non-finite input rows (``config.nonfinite_inputs`` "mask" or "raise"): swapped for a finite
   row and masked out like padding (rest_jax/guards.py); answered with a NaN score row.
   Finite rows are untouched, bit for bit. Under any policy such rows are counted in
   ``num_nonfinite_rows``.
2. Rollback: a batch with no usable row, a degenerate batch (all valid rows identical,
   ``config.skip_degenerate_batches``) or, with ``config.rollback_nonfinite``, a batch that
   would leave the state or its scores non-finite leaves the state exactly as it was (batch
   counter and key included, so later batches see no trace of it); the batch is answered by
   the previous model; ``rolled_back`` says so and ``num_rollbacks`` counts it.
3. Collapse guard (``config.collapse_guard``, off in the presets): when the EMA of the
   distinct top-1 fraction says the model collapsed, the adapted params, optimiser state,
   method state and batch counter return to the source state (so a bank refills as at the
   start); the batch is answered by the source model;
   ``reset`` says so and ``num_resets`` counts it.

The per-batch protocol is docs/method.md section 0; the robustness rules above are rest_jax's
own, in neither paper (section 9).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rest_jax import methods, retrieval
from rest_jax.config import AdaptConfig
from rest_jax.decoupling import GradientDecouplingState, contrastive_reference, gradient_decoupling
from rest_jax.guards import (
    GuardState,
    distinct_top1_fraction,
    finite_rows,
    identical_rows,
    mask_nonfinite_rows,
    update_guard,
)
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
      batch_index: int32, batches adapted on since the start or the last collapse reset
        (rejected batches do not count).
      key: PRNG key (raw uint32 data, checkpointable).
      num_rollbacks: int32, batches whose update was rejected (non-finite, degenerate, or no
        usable row).
      num_resets: int32, collapse-guard resets to the source state.
      num_nonfinite_rows: int32, valid query rows with non-finite inputs (left unanswered).
      guard: the collapse guard's :class:`rest_jax.guards.GuardState`.
    """

    adapted: PyTree
    opt_state: optax.OptState
    method_state: PyTree
    batch_index: jax.Array
    key: jax.Array
    num_rollbacks: jax.Array
    num_resets: jax.Array
    num_nonfinite_rows: jax.Array
    guard: GuardState


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
      scores: (B, N) scores of the batch (rows of padded queries are meaningless; rows of
        valid queries with non-finite inputs are NaN); ``None`` with ``config.output_top_k``.
      metrics: dict of (steps,) arrays, one entry per optimisation step.
      rolled_back: bool scalar, the update was rejected (non-finite, degenerate, or no
        usable row).
      reset: bool scalar, the collapse guard restored the source state on this batch.
      answered: (B,) bool, valid rows with finite inputs (their scores are meaningful).
      batch_metrics: dict of scalars, one value per batch: ``nonfinite_rows`` (valid rows with
        non-finite inputs), ``distinct_top1`` (fraction of distinct top-1 items among the
        answered rows), ``collapse_ema`` (the guard's EMA) and ``degenerate`` (all valid
        rows identical).
      top_values: with ``config.output_top_k = k``, (B, k) best scores per query, descending
        (NaN on rows that are not ``answered``); else ``None``.
      top_ids: (B, k) int32 gallery indices of ``top_values`` (-1 on rows not answered).
    """

    scores: jax.Array | None
    metrics: dict[str, jax.Array]
    rolled_back: jax.Array
    reset: jax.Array = False
    answered: jax.Array | None = None
    batch_metrics: dict[str, jax.Array] | None = None
    top_values: jax.Array | None = None
    top_ids: jax.Array | None = None


def make_optimizer(
    config: AdaptConfig, reference: PyTree | None = None
) -> optax.GradientTransformationExtraArgs:
    """AdamW (docs/method.md section 0), preceded by gradient decoupling when a reference is given.

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
    mesh: jax.sharding.Mesh | None = None,
) -> Callable[[AdaptState, dict, StreamConstants], tuple[AdaptState, StepOutputs]]:
    """Builds the pure per-batch transition ``step(state, batch, constants)``.

    Args:
      apply_fn: the query encoder, ``apply_fn(params, inputs) -> (B, d)`` features.
      config: the run's configuration (``config.method`` picks the method).
      optimizer: from :func:`make_optimizer` (its reference, if any, lives in the state).
      mesh: a 1-D mesh the gallery rows are sharded over (top-K searches then run per shard,
        :func:`rest_jax.retrieval.sharded_topk`); None: one device.

    Returns:
      ``step(state, batch, constants) -> (state, StepOutputs)`` where ``batch`` is a dict with
      ``"inputs"`` (leading dimension B) and ``"mask"`` ((B,) bool, true on real queries).
      Jit it with ``donate_argnums=0``.
    """
    method = methods.get(config.method)
    search = retrieval.make_topk(config.gallery_chunk_size, mesh)

    def step(state: AdaptState, batch: dict, constants: StreamConstants):
        encode = make_encode(apply_fn, constants.frozen)
        gallery = constants.gallery
        num_items, dim = gallery.shape
        if config.output_top_k is not None and config.output_top_k > num_items:
            raise ValueError(
                f"output_top_k ({config.output_top_k}) is larger than the gallery ({num_items})"
            )
        out_dtype = jnp.promote_types(gallery.dtype, jnp.float32)
        mask = jnp.asarray(batch["mask"], bool)
        inputs = batch["inputs"]
        finite = finite_rows(inputs)
        if config.nonfinite_inputs == "rollback":
            valid = mask
        else:
            inputs, valid, finite = mask_nonfinite_rows(inputs, mask)
        answered = mask & finite
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
            inputs=inputs,
            valid=valid,
            gallery=constants.gallery,
            batch_index=start.batch_index,
            key=batch_key,
            optimizer=optimizer,
            config=config,
            initial=constants.initial,
            topk=lambda q, k: search(q, gallery, k),
        )

        def one_step(carry, step_index):
            adapted, opt, mstate, _ = carry
            out = method.inner_step(ctx, adapted, opt, mstate, step_index)
            metrics = dict(out.metrics)
            dstate = decoupling_state(out.opt_state)
            if dstate is not None:
                metrics["reference_cosine"] = dstate.cosine
                metrics["projected"] = dstate.projected
            queries = out.queries.astype(out_dtype)
            return (out.adapted, out.opt_state, out.method_state, queries), metrics

        queries0 = jnp.zeros((valid.shape[0], dim), out_dtype)
        (adapted, opt_state, mstate, queries), metrics = jax.lax.scan(
            one_step,
            (start.adapted, opt_state, start.method_state, queries0),
            jnp.arange(config.steps),
        )
        new_state = start._replace(
            adapted=adapted,
            opt_state=opt_state,
            method_state=mstate,
            batch_index=start.batch_index + 1,
            key=key,
        )

        def encode_batch(adapted):
            return encode(adapted, inputs).astype(out_dtype)

        def answer(queries):
            """The batch's answer: (B, N) scores, or the (B, k) top-K, plus each top-1 id.

            Scores: the rows of valid queries with non-finite inputs are NaN, from a NaN query
            (a (B, d) select, not a copy of the (B, N) scores). The top-1 comes from a top-K
            (XLA:CPU, 64 x 5000 scores: ``argmax`` 1.6 ms of CPU time, ``top_k`` 0.37 ms);
            both take the lowest index among ties.
            """
            if config.output_top_k is None:
                queries = jnp.where((mask & ~finite)[:, None], jnp.nan, queries)
                scores = (queries @ gallery.T).astype(out_dtype)
                return scores, None, None, jax.lax.top_k(scores, 1)[1][:, 0]
            values, ids = search(queries, gallery, config.output_top_k)
            return None, values.astype(out_dtype), ids.astype(jnp.int32), ids[:, 0]

        # Reject the update (state exactly as it was, counted) when no row is usable, the
        # batch is degenerate, or the state or the scores would become non-finite.
        ok = jnp.any(valid)
        degenerate = jnp.zeros((), bool)
        if config.skip_degenerate_batches:
            degenerate = identical_rows(inputs, valid)
            ok = ok & ~degenerate
        if config.rollback_nonfinite:
            ok = ok & all_finite((adapted, opt_state, mstate)) & all_finite(queries)
        new_state = tree_select(ok, new_state, state)
        new_state = new_state._replace(num_rollbacks=state.num_rollbacks + (~ok).astype(jnp.int32))
        queries = jax.lax.cond(ok, lambda: queries, lambda: encode_batch(state.adapted))
        answers = answer(queries)

        distinct = distinct_top1_fraction(answers[-1], answered)
        reset = jnp.zeros((), bool)
        if config.collapse_guard:
            guard, reset = update_guard(
                new_state.guard,
                distinct,
                ok & jnp.any(answered),
                min_distinct=config.collapse_min_distinct,
                decay=config.collapse_ema_decay,
                warmup=config.collapse_warmup,
            )
            initial = constants.initial
            restored = new_state._replace(
                adapted=initial.adapted,
                opt_state=initial.opt_state,
                method_state=initial.method_state,
                batch_index=initial.batch_index,
            )
            new_state = tree_select(reset, restored, new_state)._replace(
                guard=guard, num_resets=new_state.num_resets + reset.astype(jnp.int32)
            )
            answers = jax.lax.cond(
                reset, lambda: answer(encode_batch(initial.adapted)), lambda: answers
            )

        nonfinite_rows = jnp.sum(mask & ~finite).astype(jnp.int32)
        new_state = new_state._replace(
            num_nonfinite_rows=new_state.num_nonfinite_rows + nonfinite_rows
        )
        scores, top_values, top_ids, _ = answers
        if scores is None:
            top_values = jnp.where(answered[:, None], top_values, jnp.nan)
            top_ids = jnp.where(answered[:, None], top_ids, -1)
        batch_metrics = {
            "nonfinite_rows": nonfinite_rows,
            "degenerate": degenerate,
            "distinct_top1": distinct,
            "collapse_ema": new_state.guard.ema,
        }
        return new_state, StepOutputs(
            scores, metrics, ~ok, reset, answered, batch_metrics, top_values, top_ids
        )

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
