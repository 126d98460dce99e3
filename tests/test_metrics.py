"""retrieval_metrics' relevance forms: one id per query (1-D), -1 padded id lists (2-D)."""

from __future__ import annotations

import numpy as np
import pytest

from rest_jax import retrieval_metrics


def scores_and_truth(q=12, n=9, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(q, n)), rng.integers(0, n, size=q)


def test_one_relevant_id_per_query():
    scores, truth = scores_and_truth()
    got = retrieval_metrics(scores, truth)
    assert got == retrieval_metrics(scores, truth[:, None])
    rank = (scores > scores[np.arange(len(truth)), truth][:, None]).sum(1)
    assert got["r1"] == pytest.approx(100 * np.mean(rank == 0))
    assert got["r5"] == pytest.approx(100 * np.mean(rank < 5))
    assert got["map"] == pytest.approx(100 * np.mean(1 / (rank + 1)))
    # Rows in another order, with their query ids.
    order = np.random.default_rng(1).permutation(len(truth))
    assert retrieval_metrics(scores[order], truth, order) == got
    assert retrieval_metrics(scores, list(truth)) == got


def test_padded_relevance():
    scores, truth = scores_and_truth()
    padded = np.stack([truth, np.full_like(truth, -1), (truth + 1) % scores.shape[1]], axis=1)
    dense = np.stack([truth, (truth + 1) % scores.shape[1]], axis=1)
    assert retrieval_metrics(scores, padded) == retrieval_metrics(scores, dense)


@pytest.mark.parametrize(
    "relevant, message",
    [
        (np.zeros((12, 1, 1), np.int64), r"\(num_queries,\) .* \(num_queries, R\).*3-D"),
        (np.array(3), r"\(num_queries,\) .* \(num_queries, R\).*0-D"),
        (np.zeros(12, np.float32), "integer gallery ids.*float32"),
        (np.zeros(12, bool), "integer gallery ids.*bool"),
        (np.full(12, -2), "-1 is the only padding"),
        (np.full(12, 9), "exceed the gallery size 9"),
        (np.zeros(5, np.int64), "5 queries.*12 score rows"),
        (np.full((12, 2), -1), "at least one relevant"),
    ],
)
def test_bad_relevance_is_a_clear_error(relevant, message):
    scores, _ = scores_and_truth()
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(scores, relevant)


def test_bad_scores_and_query_ids():
    scores, truth = scores_and_truth()
    with pytest.raises(ValueError, match=r"scores must be \(Q, N\)"):
        retrieval_metrics(scores[0], truth)
    with pytest.raises(ValueError, match="no query"):
        retrieval_metrics(scores[:0], truth)
    with pytest.raises(ValueError, match=r"query_ids must be \(Q,\) = \(12,\) integer"):
        retrieval_metrics(scores, truth, np.arange(11))
    with pytest.raises(ValueError, match="query_ids must be in 0..11"):
        retrieval_metrics(scores, truth, np.arange(12) + 1)
