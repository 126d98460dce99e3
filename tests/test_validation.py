"""Bad input at the API boundary: one test per kind, each asserting the error and its message.

Every check runs on the host before the jitted step: a rejected batch never reaches it
(``step_fn`` stays uncompiled).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import toy_apply, toy_problem

from rest_jax import Adapter, batches_from_array, pad_batch, preset, run_stream

LN_ONLY = [(r"^ln/", True)]


@pytest.fixture(scope="module")
def problem():
    params, gallery, queries, _ = toy_problem(seed=11, n_gallery=12, n_queries=16)
    return params, np.asarray(gallery), np.asarray(queries)


@pytest.fixture(scope="module")
def strict(problem):
    """One adapter (compiled once, for batches of 6) shared by the tests that run a step."""
    return make(problem, config=preset("tcr", nonfinite_inputs="raise"))


def make(problem, **kwargs):
    params, gallery, _ = problem
    config = kwargs.pop("config", preset("tcr"))
    return Adapter.create(toy_apply, params, gallery, config=config, rules=LN_ONLY, **kwargs)


def batch_of(x, mask=None):
    x = np.asarray(x)
    return {"inputs": x, "mask": np.ones(x.shape[0], bool) if mask is None else mask}


def assert_not_compiled(adapter):
    assert adapter.step_fn._cache_size() == 0


def test_wrong_rank_of_a_batch(problem):
    adapter = make(problem, input_spec=jax.ShapeDtypeStruct((8,), jnp.float32))
    bad = np.zeros((4, 2, 8), np.float32)
    with pytest.raises(
        ValueError, match=r"batch: inputs has rank 3 \(shape \(4, 2, 8\)\); expected rank 2"
    ):
        adapter.step(adapter.init_state(), batch_of(bad))
    assert_not_compiled(adapter)


def test_wrong_feature_dimension_against_the_spec(problem):
    adapter = make(problem, input_spec=jax.ShapeDtypeStruct((8,), jnp.float32))
    with pytest.raises(
        ValueError, match=r"batch 5: inputs has feature shape \(7,\); expected \(8,\)"
    ):
        adapter.step(adapter.init_state(), batch_of(np.zeros((4, 7), np.float32)), index=5)
    assert_not_compiled(adapter)


def test_spec_recorded_from_the_first_batch_rejects_a_later_shape(problem):
    _, _, queries = problem
    adapter = make(problem)
    assert adapter.input_spec is None
    adapter.check(batch_of(queries[:4]), index=0)
    assert adapter.input_spec.shape == (8,)
    with pytest.raises(
        ValueError, match=r"batch 1: inputs has feature shape \(9,\); expected \(8,\)"
    ):
        adapter.check(batch_of(np.zeros((4, 9), np.float32)), index=1)


def test_first_batch_the_encoder_cannot_take(problem):
    adapter = make(problem)
    with pytest.raises(ValueError, match=r"the query encoder cannot take inputs of shape/dtype"):
        adapter.check(batch_of(np.zeros((4, 5), np.float32)), index=0)
    assert adapter.input_spec is None  # nothing recorded from a rejected batch


def test_encoder_feature_dimension_differs_from_the_gallery(problem):
    params, gallery, _ = problem
    with pytest.raises(
        ValueError, match=r"returns 6-dimensional features but the gallery has dimension 5"
    ):
        Adapter.create(
            toy_apply,
            params,
            gallery[:, :5],
            config=preset("tcr"),
            rules=LN_ONLY,
            input_spec=jax.ShapeDtypeStruct((8,), jnp.float32),
        )


def test_wrong_dtype_kind(problem):
    adapter = make(problem, input_spec=jax.ShapeDtypeStruct((8,), jnp.float32))
    with pytest.raises(TypeError, match=r"batch 2: inputs has dtype int32; expected float32"):
        adapter.step(adapter.init_state(), batch_of(np.zeros((4, 8), np.int32)), index=2)
    assert_not_compiled(adapter)


def test_unsupported_dtype(problem):
    adapter = make(problem)
    with pytest.raises(TypeError, match=r"unsupported input dtype <U1"):
        adapter.check(batch_of(np.full((4, 8), "a")))


def test_nonfinite_batch_values_raise_naming_the_rows(problem, strict):
    _, _, queries = problem
    adapter = strict
    x = queries[:6].copy()
    x[2, 3] = np.nan
    x[5, 0] = np.inf
    batches = [batch_of(queries[6:12]), batch_of(x)]
    with pytest.raises(
        ValueError, match=r"batch 1: non-finite values \(NaN or inf\) in rows \[2, 5\]"
    ):
        run_stream(adapter, batches)


def test_nonfinite_values_in_padding_rows_are_not_an_error(problem):
    _, _, queries = problem
    adapter = make(problem, config=preset("tcr", nonfinite_inputs="raise"))
    x = queries[:4].copy()
    x[3] = np.nan
    checked = adapter.check(batch_of(x, mask=np.array([True, True, True, False])))
    assert checked["mask"].tolist() == [True, True, True, False]


def test_device_inputs_skip_the_value_check_and_are_masked_in_the_step(problem, strict):
    # A device array's values are not read on the host (that would sync); the jitted step
    # masks its non-finite rows instead.
    _, _, queries = problem
    adapter = strict
    x = jnp.asarray(queries[:6]).at[1].set(jnp.nan)
    state, out = adapter.step(adapter.init_state(), {"inputs": x, "mask": jnp.ones(6, bool)})
    assert np.asarray(out.answered).tolist() == [True, False, True, True, True, True]
    assert np.isnan(out.scores[1]).all() and np.isfinite(np.delete(out.scores, 1, 0)).all()
    assert int(state.num_nonfinite_rows) == 1


def test_nonfinite_gallery(problem):
    params, gallery, _ = problem
    gallery = gallery.copy()
    gallery[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"the gallery has non-finite values in rows \[4\]"):
        Adapter.create(toy_apply, params, gallery, config=preset("tcr"), rules=LN_ONLY)


@pytest.mark.parametrize("where", ["inputs", "targets"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_source_pairs_raise_naming_the_rows(problem, where, value):
    params, gallery, queries = problem
    inputs, targets = queries[:6].copy(), gallery[:6].copy()
    (inputs if where == "inputs" else targets)[3, 0] = value
    with pytest.raises(
        ValueError, match=rf"source {where} have non-finite values \(NaN or inf\) in rows \[3\]"
    ):
        Adapter.create(
            toy_apply,
            params,
            gallery,
            config=preset("rest", num_candidates=2),
            rules=LN_ONLY,
            source=(inputs, targets),
        )


def test_empty_gallery(problem):
    params, _, _ = problem
    with pytest.raises(ValueError, match=r"the gallery is empty \(0 items\)"):
        Adapter.create(
            toy_apply, params, np.zeros((0, 6), np.float32), config=preset("tcr"), rules=LN_ONLY
        )


def test_gallery_of_wrong_rank_or_dtype(problem):
    params, gallery, _ = problem
    with pytest.raises(
        ValueError, match=r"gallery must be a 2-D \(N, d\) array, got shape \(72,\)"
    ):
        Adapter.create(toy_apply, params, gallery.ravel(), config=preset("tcr"), rules=LN_ONLY)
    with pytest.raises(TypeError, match=r"gallery must have a floating dtype, got int64"):
        Adapter.create(
            toy_apply, params, gallery.astype(np.int64), config=preset("tcr"), rules=LN_ONLY
        )


def test_empty_stream(problem):
    adapter = make(problem)
    with pytest.raises(ValueError, match=r"the stream is empty \(no batch\)"):
        run_stream(adapter, [])
    with pytest.raises(ValueError, match=r"the stream is empty \(0 queries\)"):
        list(batches_from_array(np.zeros((0, 8), np.float32), 4))


def test_empty_batch(problem):
    adapter = make(problem)
    with pytest.raises(ValueError, match=r"batch 0: the batch has 0 rows"):
        adapter.check(batch_of(np.zeros((0, 8), np.float32)), index=0)


def test_k_larger_than_the_gallery(problem):
    params, gallery, _ = problem
    with pytest.raises(
        ValueError, match=r"num_candidates \(K=13\) is larger than the gallery \(12"
    ):
        Adapter.create(
            toy_apply, params, gallery, config=preset("rest", num_candidates=13), rules=LN_ONLY
        )


def test_top_k_larger_than_the_gallery(problem):
    _, _, queries = problem
    adapter = make(problem)
    with pytest.raises(ValueError, match=r"top_k must be in 1\.\.12 \(the gallery size\), got 20"):
        run_stream(adapter, batches_from_array(queries, 4), keep="top_k", top_k=20)


def test_unknown_preset():
    with pytest.raises(ValueError, match=r"unknown preset 'restt'; known presets: \["):
        preset("restt")


def test_unknown_method(problem):
    with pytest.raises(ValueError, match=r"unknown method 'tcr2'; known methods: \["):
        make(problem, config=preset("tcr").replace(method="tcr2"))


def test_unknown_robustness_policy(problem):
    with pytest.raises(ValueError, match=r"unknown nonfinite_inputs 'ignore'"):
        make(problem, config=preset("tcr", nonfinite_inputs="ignore"))
    with pytest.raises(ValueError, match=r"collapse_min_distinct must be in \[0, 1\], got 2"):
        make(problem, config=preset("tcr", collapse_min_distinct=2.0))


def test_mask_that_marks_no_valid_row(problem, strict):
    _, _, queries = problem
    adapter = strict
    batches = [pad_batch(queries[:6], 6), batch_of(queries[6:12], mask=np.zeros(6, bool))]
    with pytest.raises(ValueError, match=r"batch 1: the mask marks no valid row"):
        run_stream(adapter, batches)


def test_mask_of_wrong_shape_or_dtype_or_missing(problem):
    _, _, queries = problem
    adapter = make(problem)
    with pytest.raises(ValueError, match=r"batch 0: the mask has shape \(3,\); expected \(4,\)"):
        adapter.check(batch_of(queries[:4], mask=np.ones(3, bool)), index=0)
    with pytest.raises(TypeError, match=r"the mask must be bool \(or 0/1 integers\), got float32"):
        adapter.check(batch_of(queries[:4], mask=np.ones(4, np.float32)))
    with pytest.raises(ValueError, match=r"the batch has no 'mask'"):
        adapter.check({"inputs": queries[:4]})
    assert adapter.check(batch_of(queries[:4], mask=np.array([1, 0, 1, 1])))["mask"].dtype == bool


def test_pytree_inputs_disagreeing_on_the_batch_size(problem):
    adapter = make(problem)
    inputs = {"a": np.zeros((4, 8), np.float32), "b": np.zeros((3, 2), np.float32)}
    with pytest.raises(ValueError, match=r"the input leaves disagree on the batch size: \[3, 4\]"):
        adapter.check(batch_of(np.zeros((4, 8))) | {"inputs": inputs})
