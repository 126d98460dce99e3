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
   ``reset`` says so and ``num_collapse_resets`` counts it.

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
from rest_jax.methods.base import StepContext
from rest_jax.numerics import l2_normalize
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
      num_collapse_resets: int32, collapse-guard resets to the source state.
      num_nonfinite_rows: int32, valid query rows with non-finite inputs (left unanswered).
      guard: the collapse guard's :class:`rest_jax.guards.GuardState`.
    """

    adapted: PyTree
    opt_state: optax.OptState
    method_state: PyTree
    batch_index: jax.Array
    key: jax.Array
    num_rollbacks: jax.Array
    num_collapse_resets: jax.Array
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
      top_scores: with ``config.output_top_k = k``, (B, k) best scores per query, descending
        (NaN on rows that are not ``answered``); else ``None``.
      top_ids: (B, k) int32 gallery indices of ``top_scores`` (-1 on rows not answered).
    """

    scores: jax.Array | None
    metrics: dict[str, jax.Array]
    rolled_back: jax.Array
    reset: jax.Array = False
    answered: jax.Array | None = None
    batch_metrics: dict[str, jax.Array] | None = None
    top_scores: jax.Array | None = None
    top_ids: jax.Array | None = None


def needs_reference(config: AdaptConfig) -> bool:
    """Whether a run computes the reference gradient r from clean source pairs.

    Only when the update is decoupled (``config.decoupling``) or the cosine cos(g, r) is
    asked for as a diagnostic (``config.record_reference_cosine``); source pairs given to
    any other run are kept (unused) and cost nothing.
    """
    return config.decoupling or config.record_reference_cosine


def make_optimizer(
    config: AdaptConfig, reference: PyTree | None = None
) -> optax.GradientTransformationExtraArgs:
    """AdamW (docs/method.md section 0), preceded by gradient decoupling when r is needed.

    With :func:`needs_reference` false this is AdamW alone (``reference`` is ignored). With
    ``config.decoupling`` off but ``config.record_reference_cosine`` on, the transform runs
    in mode ``"none"``: it changes nothing and only records cos(g, r).

    Raises:
      ValueError: the config needs a reference and none is given.
    """
    adamw = optax.adamw(
        config.learning_rate,
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        weight_decay=config.weight_decay,
    )
    if not needs_reference(config):
        return optax.with_extra_args_support(adamw)
    if reference is None:
        wanted = "decoupling=True" if config.decoupling else "record_reference_cosine=True"
        raise ValueError(f"{wanted} needs clean source pairs to compute the reference")
    decouple = gradient_decoupling(
        reference,
        mode=config.decoupling_mode if config.decoupling else "none",
        beta=config.decoupling_beta,
        per_leaf=config.decoupling_per_leaf,
    )
    return optax.chain(decouple, adamw)


def decoupling_state(opt_state: optax.OptState) -> GradientDecouplingState | None:
    """The :class:`GradientDecouplingState` inside an optimiser state (None when absent)."""
    return optax.tree.get(opt_state, GradientDecouplingState.__name__)


def all_finite(tree: PyTree) -> jax.Array:
    """True when every floating leaf of ``tree`` is finite.

    The leaves of each dtype are concatenated and checked in one reduction. One reduction per
    leaf, with XLA copying the chain of their results into every select of the rollback, was
    a fifth of a small step's compile (a tiny CLIP rest step: 14.3k lines of optimised HLO and
    about 3.0 s, against 8.9k lines and about 2.2 s this way).
    """
    by_dtype: dict[Any, list[jax.Array]] = {}
    for x in jax.tree.leaves(tree):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.inexact):
            by_dtype.setdefault(x.dtype, []).append(x.ravel())
    checks = [jnp.all(jnp.isfinite(jnp.concatenate(xs))) for xs in by_dtype.values()]
    return jnp.all(jnp.stack(checks)) if checks else jnp.ones((), bool)


def make_encode(apply_fn: ApplyFn, frozen: PyTree) -> Callable[[PyTree, Any], jax.Array]:
    """``encode(adapted, inputs) = normalize(apply_fn(combine(adapted, frozen), inputs))``."""

    def encode(adapted, inputs):
        features = apply_fn(combine(adapted, frozen), inputs)
        return l2_normalize(features.astype(jnp.promote_types(features.dtype, jnp.float32)))

    return encode


class BatchRows(NamedTuple):
    """A batch after the non-finite rows are masked (robustness rule 1).

    Attributes:
      inputs: the inputs, non-finite rows swapped for a finite one (policy "mask").
      mask: (B,) bool, the caller's mask (true on real queries).
      valid: (B,) bool, the rows the method adapts on.
      finite: (B,) bool, rows whose inputs are all finite.
    """

    inputs: Any
    mask: jax.Array
    valid: jax.Array
    finite: jax.Array

    @property
    def answered(self) -> jax.Array:
        """(B,) bool, real rows with finite inputs: their answers are meaningful."""
        return self.mask & self.finite


def mask_bad_rows(batch: dict, config: AdaptConfig) -> BatchRows:
    """Rule 1: non-finite rows are masked out like padding (policy "rollback": kept valid,
    so that the batch's update is rejected as a whole)."""
    mask = jnp.asarray(batch["mask"], bool)
    inputs = batch["inputs"]
    if config.nonfinite_inputs == "rollback":
        return BatchRows(inputs, mask, mask, finite_rows(inputs))
    inputs, valid, finite = mask_nonfinite_rows(inputs, mask)
    return BatchRows(inputs, mask, valid, finite)


def episode_start(state: AdaptState, initial: AdaptState, config: AdaptConfig) -> AdaptState:
    """The state the batch adapts from: ``state``, or with ``config.episodic`` the initial
    adapted params and optimiser state (the rest of ``state`` carries on)."""
    if not config.episodic:
        return state
    return state._replace(adapted=initial.adapted, opt_state=initial.opt_state)


def refresh_reference(
    apply_fn: ApplyFn,
    config: AdaptConfig,
    constants: StreamConstants,
    adapted: PyTree,
    opt_state: optax.OptState,
    batch_index: jax.Array,
) -> optax.OptState:
    """Every ``config.reference_refresh_every`` batches (not batch 0), recomputes the
    reference r at the current params (docs/method.md section 4); ``opt_state`` else."""
    if not config.reference_refresh_every:
        return opt_state
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


def scan_inner_steps(
    method: methods.Method,
    ctx: StepContext,
    start: AdaptState,
    out_dtype: Any,
) -> tuple[AdaptState, jax.Array, dict[str, jax.Array]]:
    """``ctx.config.steps`` optimisation steps of ``method`` in a ``lax.scan``.

    Returns:
      ``(state, queries, metrics)``: the state after the last step (batch counter not yet
      advanced), the (B, d) queries of the last step's forward (before its update) and the
      per-step metrics, each a (steps,) array; with decoupling, ``reference_cosine`` and
      ``projected`` are added from the transform's state.
    """

    def one_step(carry, step_index):
        adapted, opt_state, method_state, _ = carry
        out = method.inner_step(ctx, adapted, opt_state, method_state, step_index)
        metrics = dict(out.metrics)
        dstate = decoupling_state(out.opt_state)
        if dstate is not None:
            metrics["reference_cosine"] = dstate.cosine
            metrics["projected"] = dstate.projected
        carry = (out.adapted, out.opt_state, out.method_state, out.queries.astype(out_dtype))
        return carry, metrics

    queries = jnp.zeros((ctx.valid.shape[0], ctx.gallery.shape[1]), out_dtype)
    carry = (start.adapted, start.opt_state, start.method_state, queries)
    (adapted, opt_state, method_state, queries), metrics = jax.lax.scan(
        one_step, carry, jnp.arange(ctx.config.steps)
    )
    state = start._replace(adapted=adapted, opt_state=opt_state, method_state=method_state)
    return state, queries, metrics


class UpdateCheck(NamedTuple):
    """Whether a batch's update is kept (robustness rule 2).

    Attributes:
      accepted: bool scalar; false rolls the state back.
      degenerate: bool scalar, all valid rows identical (``config.skip_degenerate_batches``).
    """

    accepted: jax.Array
    degenerate: jax.Array


def check_update(
    config: AdaptConfig, rows: BatchRows, candidate: AdaptState, queries: jax.Array
) -> UpdateCheck:
    """Rule 2: reject the update when no row is usable, the batch is degenerate, or (with
    ``config.rollback_nonfinite``) the state or the queries would be non-finite."""
    accepted = jnp.any(rows.valid)
    degenerate = jnp.zeros((), bool)
    if config.skip_degenerate_batches:
        degenerate = identical_rows(rows.inputs, rows.valid)
        accepted = accepted & ~degenerate
    if config.rollback_nonfinite:
        changing = (candidate.adapted, candidate.opt_state, candidate.method_state)
        accepted = accepted & all_finite(changing) & all_finite(queries)
    return UpdateCheck(accepted, degenerate)


def roll_back(accepted: jax.Array, candidate: AdaptState, previous: AdaptState) -> AdaptState:
    """``candidate`` when accepted, else ``previous`` exactly (counter and key included), with
    the rejection counted in ``num_rollbacks``.

    A ``lax.cond`` rather than a select per leaf: the same values, and a tiny CLIP rest step
    compiles 253 kernels instead of 287.
    """
    kept = jax.lax.cond(accepted, lambda: candidate, lambda: previous)
    return kept._replace(num_rollbacks=previous.num_rollbacks + (~accepted).astype(jnp.int32))


class Answer(NamedTuple):
    """A batch's answer: full score rows or a top-K, and each query's top-1 item.

    Attributes:
      scores: (B, N) scores, or None with ``config.output_top_k``.
      top_scores: (B, k) best scores per query, descending, or None without it.
      top_ids: (B, k) int32 gallery ids of ``top_scores``, or None.
      top1: (B,) the best gallery item per query (for the collapse guard).
    """

    scores: jax.Array | None
    top_scores: jax.Array | None
    top_ids: jax.Array | None
    top1: jax.Array


def answer_queries(
    queries: jax.Array,
    gallery: jax.Array,
    rows: BatchRows,
    config: AdaptConfig,
    search: retrieval.TopKFn,
) -> Answer:
    """The batch's :class:`Answer` from its (B, d) queries.

    Scores: the rows of real queries with non-finite inputs are NaN, from a NaN query (a
    (B, d) select, not a copy of the (B, N) scores). The top-1 comes from a top-K (XLA:CPU,
    64 x 5000 scores: ``argmax`` 1.6 ms of CPU time, ``top_k`` 0.37 ms); both take the
    lowest index among ties.
    """
    out_dtype = queries.dtype
    if config.output_top_k is None:
        queries = jnp.where((rows.mask & ~rows.finite)[:, None], jnp.nan, queries)
        scores = (queries @ gallery.T).astype(out_dtype)
        return Answer(scores, None, None, jax.lax.top_k(scores, 1)[1][:, 0])
    values, ids = search(queries, gallery, config.output_top_k)
    return Answer(None, values.astype(out_dtype), ids.astype(jnp.int32), ids[:, 0])


class GuardOutcome(NamedTuple):
    """The collapse guard's verdict on one batch (robustness rule 3).

    Attributes:
      state: the state after the guard (the source state's adapted params, optimiser and
        method state and batch counter on a reset), with the guard and its counter updated.
      reset: bool scalar, the guard restored the source state on this batch.
      distinct: the batch's distinct top-1 fraction.
    """

    state: AdaptState
    reset: jax.Array
    distinct: jax.Array


def collapse_guard(
    config: AdaptConfig,
    state: AdaptState,
    initial: AdaptState,
    top1: jax.Array,
    answered: jax.Array,
    accepted: jax.Array,
) -> GuardOutcome:
    """Rule 3: restore the source state when the EMA of the distinct top-1 fraction says the
    model collapsed (rest_jax/guards.py); off unless ``config.collapse_guard``."""
    distinct = distinct_top1_fraction(top1, answered)
    if not config.collapse_guard:
        return GuardOutcome(state, jnp.zeros((), bool), distinct)
    guard, reset = update_guard(
        state.guard,
        distinct,
        accepted & jnp.any(answered),
        min_distinct=config.collapse_min_distinct,
        decay=config.collapse_ema_decay,
        warmup=config.collapse_warmup,
    )
    restored = state._replace(
        adapted=initial.adapted,
        opt_state=initial.opt_state,
        method_state=initial.method_state,
        batch_index=initial.batch_index,
    )
    state = optax.tree.where(reset, restored, state)
    state = state._replace(
        guard=guard, num_collapse_resets=state.num_collapse_resets + reset.astype(jnp.int32)
    )
    return GuardOutcome(state, reset, distinct)


def make_step(
    apply_fn: ApplyFn,
    config: AdaptConfig,
    optimizer: optax.GradientTransformationExtraArgs,
    mesh: jax.sharding.Mesh | None = None,
) -> Callable[[AdaptState, dict, StreamConstants], tuple[AdaptState, StepOutputs]]:
    """Builds the pure per-batch transition ``step(state, batch, constants)``.

    The step is the composition, in this order, of :func:`mask_bad_rows`,
    :func:`episode_start`, :func:`refresh_reference`, :func:`scan_inner_steps`,
    :func:`check_update` and :func:`roll_back`, :func:`answer_queries` and
    :func:`collapse_guard` (module docstring).

    Args:
      apply_fn: the query encoder, ``apply_fn(params, inputs) -> (B, d)`` features.
      config: the run's configuration (``config.method`` picks the method).
      optimizer: from :func:`make_optimizer` (its reference, if any, lives in the state).
      mesh: a 1-D mesh the gallery rows are sharded over (top-K searches then run per shard,
        :func:`rest_jax.retrieval.sharded_top_k`), the state replicated on every device of
        it; None: one device.

    Returns:
      ``step(state, batch, constants) -> (state, StepOutputs)`` where ``batch`` is a dict with
      ``"inputs"`` (leading dimension B) and ``"mask"`` ((B,) bool, true on real queries).
      Jit it with ``donate_argnums=0``.
    """
    method = methods.get(config.method)
    search = retrieval.make_top_k(config.gallery_chunk_size, mesh)

    def step(state: AdaptState, batch: dict, constants: StreamConstants):
        gallery = constants.gallery
        if config.output_top_k is not None and config.output_top_k > gallery.shape[0]:
            raise ValueError(
                f"output_top_k ({config.output_top_k}) is larger than the gallery "
                f"({gallery.shape[0]})"
            )
        out_dtype = jnp.promote_types(gallery.dtype, jnp.float32)
        encode = make_encode(apply_fn, constants.frozen)
        rows = mask_bad_rows(batch, config)

        start = episode_start(state, constants.initial, config)
        opt_state = refresh_reference(
            apply_fn, config, constants, start.adapted, start.opt_state, start.batch_index
        )
        key, batch_key = jax.random.split(start.key)
        ctx = StepContext(
            encode=encode,
            inputs=rows.inputs,
            valid=rows.valid,
            gallery=gallery,
            batch_index=start.batch_index,
            key=batch_key,
            optimizer=optimizer,
            config=config,
            initial=constants.initial,
            top_k=lambda q, k: search(q, gallery, k),
        )
        stepped, queries, metrics = scan_inner_steps(
            method, ctx, start._replace(opt_state=opt_state), out_dtype
        )
        candidate = stepped._replace(batch_index=start.batch_index + 1, key=key)

        verdict = check_update(config, rows, candidate, queries)
        new_state = roll_back(verdict.accepted, candidate, state)
        queries = jax.lax.cond(
            verdict.accepted,
            lambda: queries,
            lambda: encode(state.adapted, rows.inputs).astype(out_dtype),
        )
        answer = answer_queries(queries, gallery, rows, config, search)

        guarded = collapse_guard(
            config, new_state, constants.initial, answer.top1, rows.answered, verdict.accepted
        )
        new_state = guarded.state
        if config.collapse_guard:
            initial_queries = lambda: encode(constants.initial.adapted, rows.inputs)
            answer = jax.lax.cond(
                guarded.reset,
                lambda: answer_queries(
                    initial_queries().astype(out_dtype), gallery, rows, config, search
                ),
                lambda: answer,
            )

        nonfinite_rows = jnp.sum(rows.mask & ~rows.finite).astype(jnp.int32)
        new_state = new_state._replace(
            num_nonfinite_rows=new_state.num_nonfinite_rows + nonfinite_rows
        )
        if mesh is not None:
            # Replicated, as Adapter.create places the initial state: otherwise XLA picks the
            # new state's shardings, the second batch meets other input shardings than the
            # first, and the step compiles twice.
            new_state = jax.lax.with_sharding_constraint(new_state, retrieval.replicated(mesh))
        return new_state, step_outputs(answer, rows, metrics, verdict, guarded, nonfinite_rows)

    return step


def step_outputs(
    answer: Answer,
    rows: BatchRows,
    metrics: dict[str, jax.Array],
    verdict: UpdateCheck,
    guarded: GuardOutcome,
    nonfinite_rows: jax.Array,
) -> StepOutputs:
    """Shapes a batch's :class:`StepOutputs`; top-K rows not answered are NaN / -1."""
    top_scores, top_ids = answer.top_scores, answer.top_ids
    if answer.scores is None:
        top_scores = jnp.where(rows.answered[:, None], top_scores, jnp.nan)
        top_ids = jnp.where(rows.answered[:, None], top_ids, -1)
    return StepOutputs(
        scores=answer.scores,
        metrics=metrics,
        rolled_back=~verdict.accepted,
        reset=guarded.reset,
        answered=rows.answered,
        batch_metrics={
            "nonfinite_rows": nonfinite_rows,
            "degenerate": verdict.degenerate,
            "distinct_top1": guarded.distinct,
            "collapse_ema": guarded.state.guard.ema,
        },
        top_scores=top_scores,
        top_ids=top_ids,
    )
