"""The study's oracle row and its aggregation over stream orders."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from toy import toy_apply, toy_problem

from experiments import aggregate, oracle, study
from rest_jax.selection import LAYERNORM_RULES


def test_oracle_tunes_on_the_first_half_and_beats_the_source_on_the_second():
    params, gallery, queries, _ = toy_problem(seed=1, n_gallery=40, n_queries=160)
    gallery = np.asarray(gallery) / np.linalg.norm(gallery, axis=1, keepdims=True)
    relevant = (np.arange(160) % 40)[:, None]
    order = np.random.default_rng(0).permutation(160)
    cfg = oracle.OracleConfig(learning_rate=3e-2, epochs=20, batch_size=16, temperature=0.05)
    out = oracle.oracle_retrieval(
        toy_apply, params, LAYERNORM_RULES, np.asarray(queries), order, gallery, relevant, cfg,
        study.embed,
    )  # fmt: skip
    assert out["r1"] > out["source_r1"] + 5
    # the source R@1 is that of the second half only
    q = study.embed(toy_apply, params, np.asarray(queries)[order[80:]])
    second = (np.argmax(q @ gallery.T, axis=1) == relevant[order[80:], 0]).mean() * 100
    assert out["source_r1"] == pytest.approx(second)


def test_oracle_temperature_is_the_models_unless_named():
    assert oracle.OracleConfig().temperature is None
    assert oracle.resolve(oracle.OracleConfig(), 0.031).temperature == 0.031
    named = oracle.OracleConfig(temperature=0.05)
    assert oracle.resolve(named, 0.031) is named
    params, gallery, queries, _ = toy_problem(seed=1, n_gallery=8, n_queries=16)
    with pytest.raises(ValueError, match="temperature must be positive"):
        oracle.oracle_retrieval(
            toy_apply, params, LAYERNORM_RULES, np.asarray(queries), np.arange(16),
            np.asarray(gallery), np.arange(16)[:, None] % 8, oracle.OracleConfig(), study.embed,
        )  # fmt: skip


def test_positives_mask_takes_padded_and_one_dimensional_relevance():
    mask = oracle.positives_mask(np.array([[0, 2], [1, -1]]), 3)
    np.testing.assert_array_equal(mask, [[True, False, True], [False, True, False]])
    np.testing.assert_array_equal(
        oracle.positives_mask(np.array([2, 0]), 3)[:, [0, 2]], [[0, 1], [1, 0]]
    )


def rows_for(method, r1_by_seed, group="qs", shift="noise@5"):
    return [
        dict(
            key=f"{group}|i2t|{method}|{shift}|seed={s}",
            run_key=f"{group}|i2t|{method}|{shift}",
            seed=s,
            group=group,
            direction="i2t",
            method=method,
            shifts=[shift],
            r1=r1,
        )
        for s, r1 in enumerate(r1_by_seed)
    ]


def test_aggregate_and_summary_mean_and_spread_over_seeds():
    rows = rows_for("source", [50.0, 50.0], group="clean", shift="clean")
    rows += rows_for("source", [10.0, 10.0]) + rows_for("source", [20.0, 20.0], shift="fog@5")
    rows += rows_for("tcr", [12.0, 16.0]) + rows_for("tcr", [22.0, 30.0], shift="fog@5")
    merged = aggregate.aggregate(rows)
    tcr_noise = next(r for r in merged if r["key"] == "qs|i2t|tcr|noise@5")
    assert tcr_noise["r1"] == 14.0 and tcr_noise["r1_std"] == pytest.approx(
        np.std([12, 16], ddof=1)
    )
    assert tcr_noise["seeds"] == [0, 1] and tcr_noise["trace_key"].endswith("seed=0")
    summary = aggregate.summary(rows)["i2t"]
    assert summary["source"] == {
        "clean_r1": 50.0, "mean_shifted_r1": 15.0, "mean_shifted_r1_std": 0.0, "seeds": 2,
        "shifts": 2,
    }  # fmt: skip
    # per-seed means 17 and 23: the spread is over seeds of the mean over shifts
    assert summary["tcr"]["mean_shifted_r1"] == 20.0
    assert summary["tcr"]["mean_shifted_r1_std"] == pytest.approx(
        np.std([17, 23], ddof=1), abs=0.01
    )


def test_oracle_room_can_tune_every_query_tower_parameter():
    from experiments.oracle_room import EVERY_PARAMETER, tuning_every_parameter
    from experiments.tasks.base import TaskData
    from rest_jax.selection import select

    params, *_ = toy_problem(seed=1, n_gallery=8, n_queries=16)
    data = TaskData(
        directions=("x2y",),
        query_side=lambda d: (toy_apply, params, LAYERNORM_RULES),
        query_inputs=None,
        galleries={},
        relevance={},
        source_pairs={},
        temperature=0.05,
        description={},
    )
    encoder, same_params, rules = tuning_every_parameter(data).query_side("x2y")
    assert encoder is toy_apply and same_params is params and rules == EVERY_PARAMETER
    every = select(params, rules).size
    assert every == sum(np.size(x) for x in jax.tree.leaves(params))
    assert select(params, LAYERNORM_RULES).size < every
