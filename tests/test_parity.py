"""The numbers of tests/data/tcr_cases.json (TCR's official semantics), in float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rest_jax import bank as bank_lib
from rest_jax import losses
from rest_jax.config import preset
from rest_jax.methods.base import StepContext
from rest_jax.methods.rest import objective
from rest_jax.metrics import retrieval_metrics
from rest_jax.numerics import entropy, l2_normalize
from rest_jax.step import make_optimizer

RTOL = 1e-8


def close(actual, expected, atol=1e-12):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=RTOL, atol=atol)


def test_p1_modality_gap(parity, x64):
    case = parity["P1"]["modality_gap"]
    a, b = jnp.array(case["a"]), jnp.array(case["b"])
    close(losses.modality_gap(a, b, jnp.ones(2, bool)), case["expected"])


def test_p1_uniformity(parity, x64):
    for case in parity["P1"]["uniformity"]:
        x = jnp.array(case["x"])
        close(losses.uniformity_loss(x, jnp.ones(len(x), bool), case["t"]), case["expected"])


def test_p1_rem_value_weights_and_gradient(parity, x64):
    case = parity["P1"]["rem"]
    logits = jnp.array(case["logits"])
    bank = bank_lib.init_bank(3, 1, jnp.float64)._replace(
        entropy=jnp.array(case["bank_entropies"]), valid=jnp.ones(3, bool)
    )
    threshold = bank_lib.entropy_threshold(bank)
    close(threshold, case["threshold_E"])
    valid = jnp.ones(3, bool)

    def loss(z):
        return losses.rem_loss(entropy(z), threshold, valid, case["eps"]).loss

    terms = losses.rem_loss(entropy(logits), threshold, valid, case["eps"])
    close(entropy(logits), case["H"])
    close(terms.weights, case["w"])
    assert np.asarray(terms.reliable).tolist() == case["mask"]
    close(terms.loss, case["expected"])
    close(jax.grad(loss)(logits), case["dL_dlogits"])


@pytest.mark.parametrize("case_index", [0, 1])
def test_p2_tcr_step0_forward_and_gradients(parity, x64, case_index):
    p2 = parity["P2"]
    case = p2["cases"][case_index]
    gallery = l2_normalize(jnp.array(p2["gallery_raw"], jnp.float64))
    x = jnp.array(p2["X"], jnp.float64)
    config = preset(
        "tcr",
        refinement_temperature=case["tau"],
        bank_ratio=p2["ratio"],
        bank_size=p2["bank_size"],
        uniformity_scale=p2["t"],
    )

    def run(weights, features):
        cfg = config.replace(**weights)
        ctx = StepContext(
            encode=lambda a, _: l2_normalize(a),
            inputs=None,
            valid=jnp.ones(5, bool),
            gallery=gallery,
            batch_index=jnp.int32(0),
            key=None,
            optimizer=None,
            config=cfg,
            initial=None,
        )
        empty = bank_lib.init_bank(p2["bank_size"], 3, jnp.float64)
        return objective(ctx, features, empty, jnp.int32(0))

    weightings = (
        {},
        dict(rem_weight=0.0, gap_weight=0.0),
        dict(rem_weight=0.0, uniformity_weight=0.0),
    )

    @jax.jit
    def forward_and_gradients(features):
        """The objective and its gradients wrt X under three weightings, as one program (run
        op by op, the float64 objective and its gradients cost several times more)."""
        grads = [jax.grad(lambda f, w=w: run(w, f)[0])(features) for w in weightings]
        return run({}, features), grads

    (loss, (q, bank, metrics)), (d_loss, d_uniformity, d_gap) = forward_and_gradients(x)
    close(q, l2_normalize(x))
    close(q, case["q"])
    scores = q @ gallery.T
    assert np.asarray(jnp.argmax(scores, 1)).tolist() == case["nn"]
    positives = gallery[jnp.argmax(scores, 1)]
    close(bank_lib.reliability_scores(q, positives, jnp.ones(5, bool)), case["indicator"])
    close(metrics["margin"], case["margin"])
    close(metrics["entropy_threshold"], case["E"])
    close(metrics["rem"], case["L_REM"])
    close(metrics["uniformity_loss"], case["L_UNI"])
    close(metrics["gap_loss"], case["L_GAP"])
    close(loss, case["L"])
    assert int(metrics["num_reliable"]) == sum(case["mask"])
    stored = np.stack([np.asarray(bank.score), np.asarray(bank.entropy)], 1)[np.asarray(bank.valid)]
    close(stored, case["queue"])

    close(d_loss, case["dL_dX"])
    close(d_uniformity, case["dLUNI_dX"])
    close(d_gap, case["dLGAP_dX"])


@pytest.mark.parametrize("direction", ["i2t", "t2i"])
def test_p6_retrieval_metrics_with_stream_order(parity, direction):
    p6 = parity["P6"]
    case = p6[direction]
    if direction == "i2t":
        scores = np.array(case["scores_by_image"])
        relevant = np.array([p6["img2txt"][str(i)] for i in range(len(scores))])
    else:
        scores = np.array(case["scores_by_text"])
        txt2img = {t: int(i) for i, ts in p6["img2txt"].items() for t in ts}
        relevant = np.array([[txt2img[t]] for t in range(len(scores))])
    order = np.array(case["stream_order"])
    from rest_jax.metrics import relevant_positions

    best = relevant_positions(scores[order], relevant[order]).min(1)
    assert best.tolist() == case["ranks_in_stream_order"]
    result = retrieval_metrics(scores[order], relevant, query_ids=order)
    for k in ("r1", "r5", "r10"):
        close(result[k], case[k])
    assert round(result["map"], 2) == case["map"]


def test_p7_adamw_matches_torch(parity, x64):
    p7 = parity["P7"]
    config = preset(
        "tcr",
        learning_rate=p7["lr"],
        weight_decay=p7["weight_decay"],
        b1=p7["b1"],
        b2=p7["b2"],
        eps=p7["eps"],
    )
    optimizer = make_optimizer(config)
    params = jnp.array(p7["p0"])
    state = optimizer.init(params)
    for grads, expected in zip(p7["grads"], p7["expected"]):
        updates, state = optimizer.update(jnp.array(grads), state, params)
        params = optax.apply_updates(params, updates)
        close(params, expected)


def test_unanswered_query_counts_as_a_miss():
    scores = np.array([[0.9, 0.1], [np.nan, np.nan]])
    relevant = np.array([[0], [0]])
    result = retrieval_metrics(scores, relevant)
    assert result["r1"] == 50.0 and result["r10"] == 50.0
