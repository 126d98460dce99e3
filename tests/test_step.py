"""The jitted adaptation step and the online loop on a toy LayerNorm encoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import toy_apply, toy_problem

from rest_jax import Adapter, batches_from_array, pad_batch, preset, run_stream
from rest_jax.step import decoupling_state

LN_ONLY = [(r"^ln/", True)]


def spec_tcr_stream(params, gallery, batches, cfg):
    """TCR semantics written from docs/method.md sections 1-3 (float64, no library code)."""
    g = gallery / jnp.linalg.norm(gallery, axis=1, keepdims=True)
    theta = dict(params["ln"])
    mom = jax.tree.map(jnp.zeros_like, theta)
    vel = jax.tree.map(jnp.zeros_like, theta)
    t = 0
    bank = []  # (si, q, g_hat, H)
    losses, kept_scores = [], []

    # The formulas are jitted (one program each, reused at every step): run op by op in
    # float64 they cost more than the library's whole stream.
    @jax.jit
    def forward(th, x):
        q = toy_apply({**params, "ln": th}, x)
        return q / jnp.linalg.norm(q, axis=1, keepdims=True)

    @jax.jit
    def entropies(q, ghat):
        z = q @ ghat.T / cfg.refinement_temperature
        logp = jax.nn.log_softmax(z, axis=1)
        return -(jnp.exp(logp) * logp).sum(1)

    @jax.jit
    @jax.value_and_grad
    def loss_and_grads(th, x, ghat, e_thr, margin):
        q = forward(th, x)
        h = entropies(q, ghat)
        keep = h <= e_thr
        w = jnp.maximum(0.0, 1 - jax.lax.stop_gradient(h) / (e_thr + cfg.rem_eps))
        rem = jnp.sum(jnp.where(keep, w * h, 0)) / jnp.maximum(keep.sum(), 1)
        uni = jnp.mean(jnp.exp(-cfg.uniformity_scale * jnp.linalg.norm(q - q.mean(0), axis=1)))
        gap = (jnp.linalg.norm(q.mean(0) - ghat.mean(0)) - margin) ** 2
        return rem + uni + gap

    for b, x in enumerate(batches):
        n = x.shape[0]
        for s in range(cfg.steps):
            q0 = forward(theta, x)
            scores = q0 @ g.T
            nn = jnp.argmax(scores, axis=1)
            ghat = g[nn]

            if s == 0 and b < cfg.bank_batches:
                si = (
                    2 * jnp.linalg.norm(q0 - ghat, axis=1)
                    - jnp.linalg.norm(q0 - q0.mean(0), axis=1)
                    - jnp.linalg.norm(ghat - ghat.mean(0), axis=1)
                )
                h0 = entropies(q0, ghat)
                chosen = np.argsort(np.asarray(si), kind="stable")[: int(cfg.bank_ratio * n)]
                bank = bank + [(float(si[i]), q0[i], ghat[i], float(h0[i])) for i in chosen]
                bank = sorted(bank, key=lambda e: e[0])[: cfg.bank_size]
            e_thr = max(e[3] for e in bank)
            bq = jnp.stack([e[1] / jnp.linalg.norm(e[1]) for e in bank]).mean(0)
            bg = jnp.stack([e[2] / jnp.linalg.norm(e[2]) for e in bank]).mean(0)
            margin = jnp.linalg.norm(bq - bg)
            loss, grads = loss_and_grads(theta, x, ghat, e_thr, margin)
            losses.append(float(loss))
            t += 1
            mom = jax.tree.map(lambda m, gr: cfg.b1 * m + (1 - cfg.b1) * gr, mom, grads)
            vel = jax.tree.map(lambda v, gr: cfg.b2 * v + (1 - cfg.b2) * gr**2, vel, grads)
            theta = jax.tree.map(
                lambda p, m, v: (
                    p
                    - cfg.learning_rate
                    * (
                        (m / (1 - cfg.b1**t)) / (jnp.sqrt(v / (1 - cfg.b2**t)) + cfg.eps)
                        + cfg.weight_decay * p
                    )
                ),
                theta,
                mom,
                vel,
            )
        kept_scores.append(scores)
    return theta, bank, np.array(losses), np.concatenate(kept_scores)


def test_multibatch_tcr_stream_matches_spec_computation(x64):
    params, gallery, queries, _ = toy_problem(seed=1, n_queries=18, dtype=jnp.float64)
    cfg = preset(
        "tcr",
        refinement_temperature=0.1,
        bank_size=4,
        bank_ratio=0.5,
        bank_batches=2,
        learning_rate=1e-2,
    )
    adapter = Adapter.create(toy_apply, params, gallery, config=cfg, rules=LN_ONLY)
    result = run_stream(adapter, batches_from_array(queries, 6))
    batches = [queries[i : i + 6] for i in range(0, 18, 6)]
    theta, bank, losses, scores = spec_tcr_stream(params, gallery, batches, cfg)

    final = adapter.params(result.final_state)
    for name in ("scale", "bias"):
        np.testing.assert_allclose(final["ln"][name], theta[name], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.metrics["loss"].reshape(-1), losses, rtol=1e-9)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-9, atol=1e-12)
    lib_bank = result.final_state.method_state
    assert int(lib_bank.valid.sum()) == len(bank) == 4
    np.testing.assert_allclose(lib_bank.score[lib_bank.valid], [e[0] for e in bank], rtol=1e-9)
    np.testing.assert_allclose(lib_bank.entropy[lib_bank.valid], [e[3] for e in bank], rtol=1e-9)
    np.testing.assert_allclose(
        lib_bank.query[lib_bank.valid], np.stack([e[1] for e in bank]), rtol=1e-9, atol=1e-12
    )
    # the adaptation moved the parameters, and the frozen ones are bit-identical
    assert not np.allclose(final["ln"]["scale"], params["ln"]["scale"])
    for name in ("embed", "head"):
        assert np.array_equal(final[name]["kernel"], params[name]["kernel"])


@pytest.mark.parametrize("name", ["tcr", "rest"])
def test_padded_last_batch_equals_unpadded(x64, name):
    params, gallery, queries, clean = toy_problem(seed=2, n_queries=10, dtype=jnp.float64)
    cfg = preset(name, num_candidates=2 if name == "rest" else 1, learning_rate=1e-2)
    source = (clean, gallery) if name == "rest" else None
    adapter = Adapter.create(toy_apply, params, gallery, config=cfg, rules=LN_ONLY, source=source)

    def run(last):
        state = adapter.init_state()
        state, _ = adapter.step(state, pad_batch(queries[:4], 4))
        state, _ = adapter.step(state, pad_batch(queries[4:8], 4))
        state, out = adapter.step(state, last)
        return state, out

    padded_state, padded_out = run(pad_batch(queries[8:], 4))
    plain_state, plain_out = run({"inputs": queries[8:], "mask": np.ones(2, bool)})
    np.testing.assert_allclose(padded_out.scores[:2], plain_out.scores, rtol=1e-10, atol=1e-12)
    for a, b in zip(jax.tree.leaves(padded_state), jax.tree.leaves(plain_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    for k, v in padded_out.metrics.items():
        np.testing.assert_allclose(v, plain_out.metrics[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("name", ["tcr", "rest", "tent"])
def test_chunked_search_and_topk_output_equal_the_plain_step(x64, name):
    """Gallery-scale path: chunked candidate search + a top-K answer change nothing else."""
    params, gallery, queries, clean = toy_problem(seed=5, n_queries=20, dtype=jnp.float64)
    cfg = preset(name, learning_rate=1e-2)
    if name == "rest":
        cfg = cfg.replace(num_candidates=3)
    source = (clean, gallery) if name == "rest" else None

    def run(**overrides):
        adapter = Adapter.create(
            toy_apply, params, gallery, config=cfg.replace(**overrides), rules=LN_ONLY,
            source=source,
        )  # fmt: skip
        keep = "top_k" if overrides else "scores"
        return run_stream(adapter, batches_from_array(queries, 8), keep=keep, top_k=5)

    plain = run()
    chunked = run(gallery_chunk_size=7, output_top_k=5)  # 40 items: 6 chunks, the last padded
    values, ids = jax.lax.top_k(jnp.asarray(plain.scores), 5)
    np.testing.assert_array_equal(chunked.top_ids, np.asarray(ids))
    np.testing.assert_allclose(chunked.top_scores, np.asarray(values), rtol=1e-12, atol=1e-14)
    for a, b in zip(jax.tree.leaves(plain.final_state), jax.tree.leaves(chunked.final_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)
    assert chunked.scores is None and chunked.top_ids.shape == (20, 5)


def test_topk_output_errors():
    params, gallery, queries, _ = toy_problem(seed=6)
    adapter = Adapter.create(
        toy_apply, params, gallery, config=preset("tcr", output_top_k=3), rules=LN_ONLY
    )
    with pytest.raises(ValueError, match="keep='scores' needs the full score rows"):
        run_stream(adapter, batches_from_array(queries, 8))
    with pytest.raises(ValueError, match="larger than the step's output_top_k"):
        run_stream(adapter, batches_from_array(queries, 8), keep="top_k", top_k=4)
    big = Adapter.create(
        toy_apply, params, gallery, config=preset("tcr", output_top_k=10_000), rules=LN_ONLY
    )
    with pytest.raises(ValueError, match="output_top_k .* larger than the gallery"):
        big.step(big.init_state(), pad_batch(queries[:4], 4))
    with pytest.raises(ValueError, match="gallery_chunk_size must be >= 1"):
        preset("rest", gallery_chunk_size=0)


@pytest.mark.parametrize("name", ["source", "tcr", "rest"])
def test_no_recompilation_along_the_stream(name):
    params, gallery, queries, clean = toy_problem(seed=3, n_queries=23)
    source = (clean, gallery) if name == "rest" else None
    adapter = Adapter.create(
        toy_apply,
        params,
        gallery,
        config=preset(name, num_candidates=2) if name == "rest" else preset(name),
        rules=LN_ONLY,
        source=source,
    )
    result = run_stream(adapter, batches_from_array(queries, 8))  # 3 batches, last padded
    assert adapter.step_fn._cache_size() == 1
    assert result.scores.shape == (23, gallery.shape[0])
    assert sorted(result.query_ids.tolist()) == list(range(23))


def test_source_returns_frozen_model_scores():
    params, gallery, queries, _ = toy_problem(seed=4)
    adapter = Adapter.create(toy_apply, params, gallery, config=preset("source"), rules=LN_ONLY)
    result = run_stream(adapter, batches_from_array(queries, 8))
    q = toy_apply(params, queries)
    q = q / jnp.linalg.norm(q, axis=1, keepdims=True)
    g = gallery / jnp.linalg.norm(gallery, axis=1, keepdims=True)
    np.testing.assert_allclose(result.scores, q @ g.T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["tcr", "rest"])
def test_batch_size_one_is_finite(name):
    params, gallery, queries, clean = toy_problem(seed=5, n_queries=3)
    source = (clean, gallery) if name == "rest" else None
    adapter = Adapter.create(
        toy_apply, params, gallery, config=preset(name), rules=LN_ONLY, source=source
    )
    result = run_stream(adapter, batches_from_array(queries, 1))
    for leaf in jax.tree.leaves(result.final_state):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            assert np.all(np.isfinite(leaf))
    # one query: int(0.3 * 1) = 0 pairs enter the bank, so nobody passes the REM filter
    assert int(result.final_state.method_state.valid.sum()) == 0
    assert np.all(result.metrics["num_reliable"] == 0)
    assert not result.rolled_back.any()


def test_gallery_smaller_than_k_is_a_clear_error():
    params, gallery, _, _ = toy_problem(seed=6, n_gallery=3)
    with pytest.raises(ValueError, match=r"K=4.*larger than the gallery \(3 items\)"):
        Adapter.create(
            toy_apply, params, gallery, config=preset("rest", num_candidates=4), rules=LN_ONLY
        )


def test_episodic_mode_restarts_every_batch():
    params, gallery, queries, _ = toy_problem(seed=7, n_queries=16)
    cfg = preset("tcr", learning_rate=1e-2)
    online = Adapter.create(toy_apply, params, gallery, config=cfg, rules=LN_ONLY)
    episodic = Adapter.create(
        toy_apply, params, gallery, config=cfg.replace(episodic=True), rules=LN_ONLY
    )
    first = pad_batch(queries[:8], 8)
    second = pad_batch(queries[8:], 8)
    s_e, _ = episodic.step(episodic.init_state(), first)
    s_e, out_e = episodic.step(s_e, second)
    fresh, out_fresh = episodic.step(episodic.init_state(), second)
    s_o, _ = online.step(online.init_state(), first)
    s_o, out_o = online.step(s_o, second)
    # episodic: the second batch's answer ignores the adaptation to the first (up to the bank)
    np.testing.assert_allclose(
        out_e.metrics["diag_gap"][0], out_fresh.metrics["diag_gap"][0], rtol=1e-6
    )
    assert not np.allclose(out_e.scores, out_o.scores)


def test_unknown_preset_and_method_errors():
    with pytest.raises(ValueError, match="unknown preset 'tcrr'"):
        preset("tcrr")
    params, gallery, _, _ = toy_problem()
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        Adapter.create(toy_apply, params, gallery, config=preset("tcr").replace(method="nope"))


def test_rest_logs_reference_cosine_and_projects():
    params, gallery, queries, clean = toy_problem(seed=8, n_queries=32)
    adapter = Adapter.create(
        toy_apply,
        params,
        gallery,
        config=preset("rest", num_candidates=2),
        rules=LN_ONLY,
        source=(clean, gallery),
    )
    result = run_stream(adapter, batches_from_array(queries, 8))
    cos = result.metrics["reference_cosine"]
    assert cos.shape == (4, 3) and np.all(np.abs(cos) <= 1.0 + 1e-6)
    assert np.any(cos != 0)
    assert "consistency_loss" in result.metrics


def test_decoupling_off_ignores_beta():
    """``decoupling=False`` means no projection and no push: beta changes nothing."""
    params, gallery, queries, clean = toy_problem(seed=9, n_queries=24)
    scores = []
    for beta in (0.0, 0.3):
        adapter = Adapter.create(
            toy_apply,
            params,
            gallery,
            config=preset(
                "rest",
                decoupling=False,
                decoupling_beta=beta,
                learning_rate=1e-2,
                record_reference_cosine=True,
            ),
            rules=LN_ONLY,
            source=(clean, gallery),
        )
        result = run_stream(adapter, batches_from_array(queries, 8))
        assert np.any(result.metrics["reference_cosine"] != 0)  # still recorded
        scores.append(result.scores)
    np.testing.assert_array_equal(scores[0], scores[1])


def test_reference_only_when_decoupling_or_asked():
    """Source pairs alone compute no reference: tent gets plain AdamW, no cosine metric;
    ``record_reference_cosine`` (or ``decoupling``) without source pairs is an error."""
    params, gallery, queries, clean = toy_problem(seed=3, n_queries=8)
    adapter = Adapter.create(
        toy_apply, params, gallery, config=preset("tent"), rules=LN_ONLY, source=(clean, gallery)
    )
    assert decoupling_state(adapter.constants.initial.opt_state) is None
    state, out = adapter.step(adapter.init_state(), next(batches_from_array(queries, 8)))
    assert "reference_cosine" not in out.metrics
    with pytest.raises(ValueError, match="record_reference_cosine=True needs clean source"):
        Adapter.create(
            toy_apply,
            params,
            gallery,
            config=preset("tent", record_reference_cosine=True),
            rules=LN_ONLY,
        )
