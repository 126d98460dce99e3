"""Stream orders, fixed-shape batches, diverse-shift streams and relevance structures."""

from __future__ import annotations

import numpy as np
import pytest

from rest_jax.data import relevance as rel
from rest_jax.data import streams as st


def test_reference_order_matches_the_reference_prefix():
    order = st.reference_order(1000)
    np.testing.assert_array_equal(order[:10], [44, 37, 675, 775, 947, 209, 719, 500, 561, 264])
    np.testing.assert_array_equal(np.sort(order), np.arange(1000))


def test_reference_order_small_sizes():
    assert st.reference_order(0).shape == (0,)
    np.testing.assert_array_equal(st.reference_order(1), [0])
    for n in (2, 3, 17):
        np.testing.assert_array_equal(np.sort(st.reference_order(n)), np.arange(n))
    with pytest.raises(ValueError):
        st.reference_order(-1)


@pytest.mark.parametrize("n", [1, 2, 7, 64, 1000, 5000])
def test_reference_order_equals_torch_randperm(n):
    torch = pytest.importorskip("torch")
    expected = torch.randperm(n, generator=torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_array_equal(st.reference_order(n), expected)


def test_seeded_order():
    np.testing.assert_array_equal(st.seeded_order(50, 3), np.random.default_rng(3).permutation(50))
    assert not np.array_equal(st.seeded_order(50, 3), st.seeded_order(50, 4))
    np.testing.assert_array_equal(st.stream_order(5, "identity"), np.arange(5))
    with pytest.raises(ValueError, match="unknown order"):
        st.stream_order(5, "random")


def test_single_domain_batches_have_fixed_shape_and_mask_the_padding():
    n, b = 150, 64
    inputs = np.arange(n * 3, dtype=np.float32).reshape(n, 3) + 1.0
    batches = list(st.query_shift_stream(inputs, batch_size=b))
    assert len(batches) == 3
    order = st.reference_order(n)
    seen = []
    for batch in batches:
        assert batch["inputs"].shape == (b, 3) and batch["mask"].shape == (b,)
        valid = batch["mask"]
        np.testing.assert_array_equal(valid, batch["ids"] >= 0)
        np.testing.assert_array_equal(batch["inputs"][valid], inputs[batch["ids"][valid]])
        assert np.all(batch["domain"][valid] == 0) and np.all(batch["domain"][~valid] == -1)
        seen.extend(batch["ids"][valid].tolist())
    np.testing.assert_array_equal(seen, order)
    last = batches[-1]
    assert last["mask"].sum() == n - 2 * b and not last["mask"][n - 2 * b :].any()
    # Padding repeats the first row of the batch.
    np.testing.assert_array_equal(
        last["inputs"][~last["mask"]], np.tile(last["inputs"][0], (42, 1))
    )


def test_zero_padding_and_dict_inputs():
    n = 10
    inputs = {"tokens": np.arange(n * 4).reshape(n, 4) + 1, "length": np.arange(n) + 1}
    (batch,) = list(st.query_shift_stream(inputs, batch_size=16, order="identity", pad="zeros"))
    assert batch["inputs"]["tokens"].shape == (16, 4) and batch["inputs"]["length"].shape == (16,)
    np.testing.assert_array_equal(batch["inputs"]["tokens"][:n], inputs["tokens"])
    assert not batch["inputs"]["tokens"][n:].any() and not batch["inputs"]["length"][n:].any()
    with pytest.raises(ValueError, match="pad"):
        next(st.query_shift_stream(inputs, pad="edge"))


def _domain_inputs(sizes):
    """Domain d's query q has input 1000 * d + q, so rows can be traced back."""
    return [1000 * d + np.arange(size)[:, None] for d, size in enumerate(sizes)]


def test_mixed_stream_has_every_domain_in_the_asked_proportions():
    sizes, proportions, total, b = (100, 80, 60), (0.5, 0.3, 0.2), 150, 32
    plan = st.mixed_plan(sizes, proportions, total, batch_size=b, seed=5)
    np.testing.assert_array_equal(plan.domain_counts(3), [75, 45, 30])
    assert plan.n_queries == total and plan.n_batches == 5
    np.testing.assert_array_equal(plan.mask, plan.ids >= 0)
    np.testing.assert_array_equal(plan.mask, plan.domain >= 0)
    assert plan.mask.sum() == total and (~plan.mask).sum() == 5 * b - total
    domain, ids = plan.rows()
    assert len(set(zip(domain.tolist(), ids.tolist()))) == total  # no query twice
    assert len(np.unique(domain[:30])) == 3  # interleaved, not blocked
    for d, size in enumerate(sizes):  # each domain streams its own order
        np.testing.assert_array_equal(
            ids[domain == d], st.reference_order(size)[: (domain == d).sum()]
        )
    inputs = _domain_inputs(sizes)
    for batch in st.iterate_batches(plan, inputs):
        valid = batch["mask"]
        np.testing.assert_array_equal(
            batch["inputs"][valid, 0], 1000 * batch["domain"][valid] + batch["ids"][valid]
        )
    again = st.mixed_plan(sizes, proportions, total, batch_size=b, seed=5)
    np.testing.assert_array_equal(again.domain, plan.domain)
    other = st.mixed_plan(sizes, proportions, total, batch_size=b, seed=6)
    assert not np.array_equal(other.domain, plan.domain)


def test_mixed_defaults_use_every_query_and_capacity_is_checked():
    plan = st.mixed_plan((30, 50), batch_size=16, seed=0)
    np.testing.assert_array_equal(plan.domain_counts(2), [30, 50])
    plan = st.mixed_plan((30, 50), proportions=(1, 1), batch_size=16)
    np.testing.assert_array_equal(plan.domain_counts(2), [30, 30])
    with pytest.raises(ValueError, match="domain 0 needs"):
        st.mixed_plan((30, 50), proportions=(1, 1), total=70)
    with pytest.raises(ValueError, match="proportions"):
        st.mixed_plan((30, 50), proportions=(1, 1, 1))


def test_allocate_sums_to_total():
    counts = st.allocate(10, (1, 1, 1), (10, 10, 10))
    assert counts.sum() == 10 and counts.max() - counts.min() <= 1


def test_continual_stream_goes_domain_after_domain():
    sizes, b = (70, 40, 64), 32
    plan = st.continual_plan(sizes, batch_size=b)
    # 70 -> 3 batches, 40 -> 2, 64 -> 2; every batch holds one domain.
    assert plan.n_batches == 7
    for row in range(plan.n_batches):
        assert len(np.unique(plan.domain[row][plan.mask[row]])) == 1
    domain, ids = plan.rows()
    np.testing.assert_array_equal(domain, np.repeat([0, 1, 2], sizes))
    np.testing.assert_array_equal(ids[:70], st.reference_order(70))
    np.testing.assert_array_equal(plan.mask, plan.ids >= 0)
    assert (~plan.mask).sum() == (3 * b - 70) + (2 * b - 40)
    batches = list(st.continual_stream(_domain_inputs(sizes), batch_size=b))
    assert [int(bt["domain"][0]) for bt in batches] == [0, 0, 0, 1, 1, 2, 2]
    joined = st.continual_plan(sizes, batch_size=b, split_at_domains=False)
    assert joined.n_batches == 6 and (~joined.mask).sum() == 6 * b - sum(sizes)
    np.testing.assert_array_equal(joined.rows()[0], domain)


def test_iterate_batches_checks_the_inputs():
    plan = st.mixed_plan((10, 10), batch_size=8)
    with pytest.raises(ValueError, match="domain 1"):
        list(st.iterate_batches(plan, [np.zeros((10, 2))]))
    with pytest.raises(ValueError, match="has 5"):
        list(st.iterate_batches(plan, [np.zeros((10, 2)), np.zeros((5, 2))]))


# ----------------------------------------------------------------------------------------------
# Relevance.


def test_image_text_relevance():
    caption_image_ids = np.repeat(np.arange(4), 5)
    i2t = rel.image_to_text(caption_image_ids)
    assert i2t.shape == (4, 5) and i2t.dtype == np.int32
    np.testing.assert_array_equal(i2t, np.arange(20).reshape(4, 5))
    t2i = rel.text_to_image(caption_image_ids)
    np.testing.assert_array_equal(t2i[:, 0], caption_image_ids)
    # Uneven caption counts are padded with -1.
    uneven = rel.image_to_text(np.array([0, 1, 0, 1, 1, 2]))
    np.testing.assert_array_equal(uneven, [[0, 2, -1], [1, 3, 4], [5, -1, -1]])
    with pytest.raises(ValueError, match="no relevant"):
        rel.image_to_text(np.array([0, 2]))


def test_identity_relevance_is_many_to_many():
    query = np.array([3, 1, 3])
    gallery = np.array([1, 3, 3, 2, 1, 3])
    relevant = rel.identity_relevance(query, gallery)
    np.testing.assert_array_equal(relevant, [[1, 2, 5], [0, 4, -1], [1, 2, 5]])
    mask = rel.relevance_mask(relevant, len(gallery))
    np.testing.assert_array_equal(mask, query[:, None] == gallery[None, :])
    # Query set == gallery set: drop each query itself (identity 2 then has nothing left).
    with pytest.raises(ValueError, match="no relevant gallery item left"):
        rel.identity_relevance(gallery, gallery, exclude=np.arange(6))
    kept = rel.identity_relevance(gallery[[0, 1]], gallery, exclude=np.array([0, 1]))
    np.testing.assert_array_equal(kept, [[4, -1], [2, 5]])


def test_validate_relevance_rejects_bad_padding():
    with pytest.raises(ValueError, match="padding must come after"):
        rel.validate_relevance(np.array([[0, -1, 2]]), 3)
    with pytest.raises(ValueError, match="at least one"):
        rel.validate_relevance(np.array([[-1, -1]]), 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        rel.validate_relevance(np.array([[3]]), 3)
    np.testing.assert_array_equal(rel.composed_relevance(np.array([4, 7]))[:, 0], [4, 7])
