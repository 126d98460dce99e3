"""Bad batches in the middle of a stream, masked rows, rollbacks and the collapse guard.

Tolerance (default learning rate 3e-4, 3 steps, toy encoder, batches of 16): a batch of pure
noise is a legitimate, finite batch and the model adapts on it; its effect on the clean
batches that follow is bounded by AdamW (one outlier batch moves each parameter by a few
tens of learning rates at most). We require, on the clean batches after it: every score
within 0.05 (cosine scale) of the run without the bad batches, >= 95% identical top-1
items, R@1 within 3 points, and the adapted parameters within 100 * lr. The NaN batch and
the all-constant batch leave no trace at all (bit-identical).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import toy_apply, toy_problem

from rest_jax import Adapter, methods, pad_batch, preset, retrieval_metrics, run_stream
from rest_jax.guards import distinct_top1_fraction, identical_rows, init_guard, update_guard
from rest_jax.methods.base import InnerResult
from rest_jax.step import all_finite

LN_ONLY = [(r"^ln/", True)]
B = 16
N_GALLERY = 40
BAD_AT = 12  # after the bank's first W = 10 batches


@pytest.fixture(scope="module")
def problem():
    params, gallery, queries, clean = toy_problem(seed=0, n_gallery=N_GALLERY, n_queries=320)
    return params, np.asarray(gallery), np.asarray(queries), np.asarray(clean)


def bad_batches():
    rng = np.random.default_rng(0)
    return {
        "nan": np.full((B, 8), np.nan, np.float32),
        "constant": np.full((B, 8), 0.7, np.float32),
        "noise": (3.0 * rng.normal(size=(B, 8))).astype(np.float32),
    }


def stream(queries, inserted=()):
    clean = [queries[i : i + B] for i in range(0, len(queries), B)]
    for x in clean[:BAD_AT] + list(inserted) + clean[BAD_AT:]:
        yield pad_batch(x, B)


def finite_state(state):
    return all(
        np.all(np.isfinite(x))
        for x in jax.tree.leaves(state)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    )


def without(scores, start, count):
    return np.concatenate([scores[:start], scores[start + count :]])


def max_param_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.fixture(scope="module")
def tcr_adapter(problem):
    params, gallery, _, _ = problem
    return Adapter.create(toy_apply, params, gallery, config=preset("tcr"), rules=LN_ONLY)


@pytest.mark.parametrize("name", ["tcr", "rest"])
def test_nan_constant_and_noise_batches_in_the_middle(problem, tcr_adapter, name):
    params, gallery, queries, clean = problem
    config = preset(name, num_candidates=2) if name == "rest" else preset(name)
    source = (clean, gallery) if name == "rest" else None
    adapter = tcr_adapter
    if name == "rest":
        adapter = Adapter.create(
            toy_apply, params, gallery, config=config, rules=LN_ONLY, source=source
        )
    bad = bad_batches()
    reference = run_stream(adapter, stream(queries))
    traceless = run_stream(adapter, stream(queries, [bad["nan"], bad["constant"]]))
    result = run_stream(adapter, stream(queries, [bad["nan"], bad["constant"], bad["noise"]]))

    # the state stays finite and the counters say what happened
    state = result.final_state
    assert finite_state(state)
    assert result.rolled_back.nonzero()[0].tolist() == [BAD_AT, BAD_AT + 1]
    assert int(state.num_rollbacks) == 2
    assert int(state.num_nonfinite_rows) == B
    assert result.batch_metrics["nonfinite_rows"][BAD_AT] == B
    assert result.batch_metrics["degenerate"].nonzero()[0].tolist() == [BAD_AT + 1]
    assert int(state.batch_index) == int(reference.final_state.batch_index) + 1  # noise adapts
    # the NaN queries are unanswered (NaN rows), every other row is finite
    start = BAD_AT * B
    assert not result.answered[start : start + B].any() and result.answered.sum() == 320 + 2 * B
    assert np.isnan(result.scores[start : start + B]).all()
    assert np.isfinite(np.delete(result.scores, np.s_[start : start + B], 0)).all()

    # the NaN and constant batches leave no trace: the clean rows are bit-identical
    np.testing.assert_array_equal(without(traceless.scores, start, 2 * B), reference.scores)
    for a, b in zip(jax.tree.leaves(traceless.final_state.adapted), jax.tree.leaves(state.adapted)):
        assert a.shape == b.shape

    # the clean batches after the noise batch are answered as well as without it
    after = slice(start, None)
    ours = without(result.scores, start, 3 * B)[after]
    ref = reference.scores[after]
    relevant = (np.arange(320) % N_GALLERY)[:, None][after]
    assert np.max(np.abs(ours - ref)) <= 0.05
    assert np.mean(ours.argmax(1) == ref.argmax(1)) >= 0.95
    r1_ours, r1_ref = (retrieval_metrics(s, relevant)["r1"] for s in (ours, ref))
    assert abs(r1_ours - r1_ref) <= 3.0
    assert (
        max_param_diff(state.adapted, reference.final_state.adapted) <= 100 * config.learning_rate
    )


def test_constant_batch_without_skipping_stays_finite_and_bounded(problem):
    # also: the collapse guard never fires on this healthy stream
    params, gallery, queries, _ = problem
    config = preset("tcr", skip_degenerate_batches=False, collapse_guard=True)
    adapter = Adapter.create(toy_apply, params, gallery, config=config, rules=LN_ONLY)
    reference = run_stream(adapter, stream(queries))
    result = run_stream(adapter, stream(queries, [bad_batches()["constant"]]))
    assert not result.rolled_back.any()
    assert np.isfinite(result.scores).all() and finite_state(result.final_state)
    after = without(result.scores, BAD_AT * B, B)[BAD_AT * B :]
    ref = reference.scores[BAD_AT * B :]
    assert np.max(np.abs(after - ref)) <= 0.05
    assert np.mean(after.argmax(1) == ref.argmax(1)) >= 0.95
    diff = max_param_diff(result.final_state.adapted, reference.final_state.adapted)
    assert 0 < diff <= 100 * config.learning_rate
    assert int(result.final_state.num_collapse_resets) == 0 and not reference.reset.any()
    assert result.batch_metrics["distinct_top1"][BAD_AT] == 1 / B  # the constant batch
    assert result.batch_metrics["collapse_ema"].min() > config.collapse_min_distinct


def test_one_nan_row_is_masked_and_the_rest_of_the_batch_adapts(problem, tcr_adapter):
    params, gallery, queries, _ = problem
    adapter = tcr_adapter
    x = queries[:B].copy()
    x[5, 2] = np.nan
    state, out = adapter.step(adapter.init_state(), pad_batch(x, B))
    assert not bool(out.rolled_back)
    assert np.asarray(out.answered).tolist() == [i != 5 for i in range(B)]
    assert np.isnan(out.scores[5]).all() and np.isfinite(np.delete(out.scores, 5, 0)).all()
    assert int(state.num_nonfinite_rows) == 1 and int(state.num_rollbacks) == 0
    # the same as adapting on the batch without that row
    keep = np.arange(B) != 5
    plain, plain_out = adapter.step(adapter.init_state(), pad_batch(queries[:B][keep], B))
    for a, b in zip(jax.tree.leaves(state.adapted), jax.tree.leaves(plain.adapted)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.scores[keep], plain_out.scores[: B - 1], rtol=1e-5, atol=1e-6)
    assert max_param_diff(state.adapted, adapter.constants.initial.adapted) > 0


def test_rollback_policy_rejects_the_whole_batch(problem):
    params, gallery, queries, _ = problem
    config = preset("tcr", nonfinite_inputs="rollback")
    adapter = Adapter.create(toy_apply, params, gallery, config=config, rules=LN_ONLY)
    state, _ = adapter.step(adapter.init_state(), pad_batch(queries[:B], B))
    before = jax.tree.map(np.array, state)
    x = queries[B : 2 * B].copy()
    x[3] = np.nan
    state, out = adapter.step(state, pad_batch(x, B))
    assert bool(out.rolled_back) and int(state.num_rollbacks) == 1
    for a, b in zip(
        jax.tree.leaves(state),
        jax.tree.leaves(before._replace(num_rollbacks=1, num_nonfinite_rows=1)),
    ):
        np.testing.assert_array_equal(a, b)
    # answered by the previous model (the NaN row by nothing)
    q = adapter.constants.gallery
    encoded = toy_apply(adapter.params(state), x)
    expected = (encoded / jnp.linalg.norm(encoded, axis=1, keepdims=True)) @ q.T
    keep = np.arange(B) != 3
    np.testing.assert_allclose(out.scores[keep], expected[keep], rtol=1e-5, atol=1e-6)
    assert np.isnan(out.scores[3]).all()


def test_topk_and_metrics_only_keep_what_is_asked(problem, tcr_adapter):
    _, _, queries, _ = problem
    batches = lambda: stream(queries[: 3 * B], [bad_batches()["nan"]])
    top_k = run_stream(tcr_adapter, batches(), keep="top_k", top_k=3)
    full = run_stream(tcr_adapter, batches())
    assert top_k.scores is None and top_k.top_ids.shape == (4 * B, 3)
    assert (top_k.top_ids[~top_k.answered] == -1).all()
    assert np.isnan(top_k.top_scores[~top_k.answered]).all()
    np.testing.assert_array_equal(
        top_k.top_ids[top_k.answered][:, 0], full.scores[full.answered].argmax(1)
    )
    metrics = run_stream(tcr_adapter, batches(), keep="metrics")
    assert metrics.scores is None and metrics.query_ids is None and metrics.answered is None
    assert (
        metrics.metrics["loss"].shape == (4, 3)
        and metrics.rolled_back.tolist() == full.rolled_back.tolist()
    )


# --- collapse guard ---------------------------------------------------------------------


def test_distinct_top1_fraction_and_identical_rows():
    scores = jnp.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.0, 0.7], [0.0, 1.0, 0.0]])
    assert float(
        distinct_top1_fraction(scores.argmax(1), jnp.array([True, True, True, False]))
    ) == pytest.approx(2 / 3)
    assert (
        float(distinct_top1_fraction(scores.argmax(1), jnp.array([True, True, False, False])))
        == 0.5
    )
    assert float(distinct_top1_fraction(scores.argmax(1), jnp.zeros(4, bool))) == 1.0
    x = jnp.ones((4, 3))
    assert bool(identical_rows(x, jnp.ones(4, bool)))
    assert not bool(identical_rows(x.at[2, 1].set(2.0), jnp.ones(4, bool)))
    assert bool(identical_rows(x.at[2, 1].set(2.0), jnp.array([True, True, False, True])))
    assert not bool(identical_rows(x, jnp.array([True, False, False, False])))  # one row


def test_all_finite_checks_every_floating_leaf_in_its_own_dtype(x64):
    tree = {
        "f32": jnp.ones((3,), jnp.float32),
        "bf16": jnp.ones((2, 2), jnp.bfloat16),
        "f64": jnp.array([1e300], jnp.float64),  # finite; it would overflow a float32 check
        "counter": jnp.array(7, jnp.int32),
        "none": None,
    }
    assert bool(all_finite(tree))
    assert bool(all_finite({})) and bool(all_finite({"counter": jnp.int32(1)}))
    for leaf, bad in (("f32", jnp.nan), ("bf16", jnp.inf), ("f64", -jnp.inf)):
        broken = {**tree, leaf: tree[leaf].ravel().at[0].set(bad).reshape(tree[leaf].shape)}
        assert not bool(all_finite(broken)), leaf


def test_guard_fires_once_when_the_source_itself_looks_collapsed():
    # A statistic that never recovers (the source model itself is "collapsed"): one reset,
    # then the guard stays disarmed instead of firing every few batches.
    guard, fired = init_guard(), []
    for _ in range(40):
        guard, fire = update_guard(
            guard, jnp.float32(0.05), jnp.bool_(True), min_distinct=0.2, decay=0.9, warmup=3
        )
        fired.append(bool(fire))
    assert np.nonzero(fired)[0].tolist() == [2]
    # it re-arms once the statistic is healthy, and can fire again after a new collapse
    for value in [0.9] * 3 + [0.0] * 30:
        guard, fire = update_guard(
            guard, jnp.float32(value), jnp.bool_(True), min_distinct=0.2, decay=0.9, warmup=3
        )
        fired.append(bool(fire))
    assert sum(fired) == 2


def collapsing_step(ctx, adapted, opt_state, method_state, step_index):
    """Drives the LayerNorm scale to 0 (every query then maps to the same feature)."""
    queries = ctx.encode(adapted, ctx.inputs)
    ln = adapted["ln"]
    adapted = {**adapted, "ln": {"scale": 0.3 * ln["scale"], "bias": ln["bias"]}}
    return InnerResult(adapted, opt_state, method_state + 1, queries, {"loss": jnp.zeros(())})


def collapsing_method() -> methods.Method:
    return methods.Method(lambda config, **shapes: jnp.zeros((), jnp.int32), collapsing_step)


def test_collapse_guard_restores_the_source_state(problem, caplog):
    params, gallery, queries, _ = problem
    if "test_collapsing" not in methods.available():
        methods.register("test_collapsing", collapsing_method)
    config = preset(
        "tcr",
        method="test_collapsing",
        steps=1,
        collapse_guard=True,
        collapse_min_distinct=0.3,
        collapse_ema_decay=0.5,
        collapse_warmup=2,
    )
    adapter = Adapter.create(toy_apply, params, gallery, config=config, rules=LN_ONLY)
    with caplog.at_level(logging.WARNING, logger="rest_jax"):
        result = run_stream(adapter, stream(queries))
    resets = np.nonzero(result.reset)[0]
    assert len(resets) >= 2 and int(result.final_state.num_collapse_resets) == len(resets)
    assert "collapse guard restored the source state" in caplog.text
    # the batch that triggers a reset is answered by the source model
    unadapted = Adapter.create(toy_apply, params, gallery, config=preset("source"), rules=LN_ONLY)
    source = run_stream(unadapted, stream(queries))
    for b in resets:
        rows = slice(b * B, (b + 1) * B)
        np.testing.assert_allclose(result.scores[rows], source.scores[rows], rtol=1e-5, atol=1e-6)
    # between resets the model collapses; the guard keeps the batches' distinctness up
    assert result.batch_metrics["distinct_top1"].mean() > 0.3
    off = run_stream(
        Adapter.create(
            toy_apply, params, gallery, config=config.replace(collapse_guard=False), rules=LN_ONLY
        ),
        stream(queries),
        keep="metrics",
    )
    assert off.batch_metrics["distinct_top1"][-5:].max() <= 1 / B + 1e-6
    assert not off.reset.any()
