"""Baselines (docs/method.md sec. 6): parity case P5, filters, running state, streams, padding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy import layer_norm, toy_apply, toy_problem

from rest_jax import Adapter, batches_from_array, methods, pad_batch, preset, run_stream
from rest_jax.methods.base import StepContext
from rest_jax.methods.baseline_common import lowest_entropy, strictly_below_kth
from rest_jax.methods.deyo import deyo_loss, patch_permutations, patch_shuffled_view
from rest_jax.methods.eata import EataState, eata_loss
from rest_jax.methods.read import read_loss
from rest_jax.methods.sar import SarState, sar_first_filter
from rest_jax.methods.shot import shot_loss
from rest_jax.methods.tent import tent_loss
from rest_jax.numerics import entropy
from rest_jax.step import make_encode, make_optimizer

LN_ONLY = [(r"^ln/", True)]
RTOL = 1e-8


def close(actual, expected, rtol=RTOL, atol=1e-12):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def make_adapter(name, params, gallery, apply_fn=toy_apply, clean=None, **overrides):
    if name == "rest":
        overrides.setdefault("num_candidates", 2)
    source = (clean, gallery) if name == "rest" else None
    return Adapter.create(
        apply_fn, params, gallery, config=preset(name, **overrides), rules=LN_ONLY, source=source
    )


def toy_image_apply(params, images):
    """NHWC images -> flatten -> dense -> LayerNorm (adapted) -> dense."""
    h = jnp.tanh(images.reshape(images.shape[0], -1) @ params["embed"]["kernel"])
    h = layer_norm(h, params["ln"]["scale"], params["ln"]["bias"])
    return h @ params["head"]["kernel"]


def toy_image_problem(seed=0, n_gallery=10, n_queries=12, size=8, dtype=jnp.float32):
    k1, k2, k3, k4, k5 = jax.random.split(jax.random.PRNGKey(seed), 5)
    d_in, width, dim = size * size, 16, 6
    params = {
        "embed": {"kernel": jax.random.normal(k1, (d_in, width), dtype) / jnp.sqrt(d_in)},
        "ln": {"scale": jnp.ones((width,), dtype), "bias": jnp.zeros((width,), dtype)},
        "head": {"kernel": jax.random.normal(k2, (width, dim), dtype) / jnp.sqrt(width)},
    }
    clean = jax.random.normal(k3, (n_gallery, size, size, 1), dtype)
    gallery = toy_image_apply(params, clean) + 0.3 * jax.random.normal(k4, (n_gallery, dim), dtype)
    picks = jnp.arange(n_queries) % n_gallery
    queries = clean[picks] + 0.5 * jax.random.normal(k5, (n_queries, size, size, 1), dtype)
    return params, gallery, queries


def direct_context(adapter, inputs, valid):
    """A StepContext for calling a method's inner_step outside the engine."""
    cfg = adapter.config
    return StepContext(
        encode=make_encode(toy_apply, adapter.constants.frozen),
        inputs=inputs,
        valid=jnp.asarray(valid),
        gallery=adapter.constants.gallery,
        batch_index=jnp.int32(0),
        key=jax.random.PRNGKey(0),
        optimizer=make_optimizer(cfg),
        config=cfg,
        initial=adapter.constants.initial,
    )


def probs_np(logits):
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def entropy_np(logits):
    p = probs_np(logits)
    return -(p * np.log(np.maximum(p, 1e-300))).sum(1)


# --- P5: the reference numbers, from the library's loss functions, in float64.


def test_p5_tent_read_shot_sar(parity, x64):
    p5 = parity["P5"]
    logits = jnp.array(p5["logits"], jnp.float64)
    valid = jnp.ones(logits.shape[0], bool)
    close(entropy(logits), p5["H"])
    close(tent_loss(logits, valid), p5["tent"])

    read = read_loss(logits, valid)
    close(read.prob_sum, p5["read"]["p_sum"])
    close(read.balance, p5["read"]["L_bal"])
    close(read.reliability, p5["read"]["L_ra"])
    close(read.loss, p5["read"]["expected"])

    shot = shot_loss(logits, valid)  # defaults: confidence 0.9, ce weight 0.1, eps 1e-5
    close(shot.entropy, p5["shot"]["entropy"])
    close(shot.diversity_term, p5["shot"]["diversity_term"])
    assert np.asarray(shot.confident).tolist() == p5["shot"]["confident"]
    close(shot.ce, p5["shot"]["ce"])
    close(shot.loss, p5["shot"]["expected"])

    case = p5["sar_first_filter"]
    first = sar_first_filter(logits, valid, case["fraction"])
    assert int(first.count) == case["k"]
    assert np.flatnonzero(np.asarray(first.selected)).tolist() == case["selected"]
    close(first.threshold, case["threshold"])
    close(first.loss, case["L1"])


def test_p5_losses_ignore_padded_rows(parity, x64):
    logits = jnp.array(parity["P5"]["logits"], jnp.float64)
    padded = jnp.concatenate([logits, 10.0 * logits[:2]])  # confident junk rows
    valid = jnp.arange(6) < 4
    ones = jnp.ones(4, bool)
    close(tent_loss(padded, valid), tent_loss(logits, ones))
    for a, b in zip(read_loss(padded, valid), read_loss(logits, ones)):
        close(a, b)
    sa, sb = shot_loss(padded, valid), shot_loss(logits, ones)
    close(sa.loss, sb.loss)
    assert np.asarray(sa.confident[:4]).tolist() == np.asarray(sb.confident).tolist()
    assert not np.asarray(sa.confident[4:]).any()
    fa, fb = sar_first_filter(padded, valid, 0.4), sar_first_filter(logits, ones, 0.4)
    assert np.asarray(fa.selected[:4]).tolist() == np.asarray(fb.selected).tolist()
    close(fa.loss, fb.loss)


# --- Filters on constructed logits.


def peaked_logits(margins, n_items=5):
    """Row i puts ``margins[i]`` on item i % n_items: entropy falls as the margin grows."""
    margins = np.asarray(margins, np.float64)
    z = np.zeros((len(margins), n_items))
    z[np.arange(len(margins)), np.arange(len(margins)) % n_items] = margins
    return jnp.asarray(z, jnp.float32)


def test_lowest_entropy_keeps_k_of_the_valid_rows():
    h = jnp.array([0.5, 0.1, 0.9, 0.3, 0.0, 0.2, 0.7])
    valid = jnp.array([True, True, True, True, False, True, True])  # row 4 padded, lowest H
    kept = lowest_entropy(h, valid, 0.4)  # int(0.4 * 6) = 2
    assert int(kept.count) == 2
    assert np.flatnonzero(np.asarray(kept.selected)).tolist() == [1, 5]
    close(kept.threshold, 0.2, rtol=1e-6)
    # ties: exactly k are kept, the earlier rows first
    tied = lowest_entropy(jnp.array([0.2, 0.1, 0.2, 0.2]), jnp.ones(4, bool), 0.5)
    assert np.flatnonzero(np.asarray(tied.selected)).tolist() == [0, 1]
    empty = lowest_entropy(h[:2], jnp.ones(2, bool), 0.4)  # int(0.8) = 0
    assert not np.asarray(empty.selected).any() and float(empty.threshold) == 0.0


def test_strict_entropy_filter_of_deyo():
    h = jnp.array([0.5, 0.1, 0.9, 0.3, 0.0, 0.2])
    valid = jnp.array([True, True, True, True, False, True])
    kept = strictly_below_kth(h, valid, 0.5)  # k = int(0.5 * 5) = 2: H < 0.3
    assert np.flatnonzero(np.asarray(kept.selected)).tolist() == [1, 5]
    # boundary ties are all left out: H < 0.2 keeps one row although k = 2
    tied = strictly_below_kth(jnp.array([0.2, 0.1, 0.2, 0.4]), jnp.ones(4, bool), 0.5)
    assert np.flatnonzero(np.asarray(tied.selected)).tolist() == [1]
    every = strictly_below_kth(h, valid, 1.0)
    assert np.asarray(every.selected).tolist() == np.asarray(valid).tolist()


def test_eata_filters_weights_and_running_mean():
    logits = peaked_logits([1.0, 6.0, 2.0, 5.0, 7.0, 0.5], n_items=5)
    valid = jnp.array([True, True, True, True, True, False])
    h = entropy_np(logits)
    undefined = EataState(jnp.zeros(5), jnp.zeros((), bool))
    terms = eata_loss(logits, valid, undefined, fraction=0.4, cosine_margin=0.05)
    # int(0.4 * 5) = 2 lowest-entropy valid rows: 4 (margin 7) and 1 (margin 6)
    assert np.flatnonzero(np.asarray(terms.selected_entropy)).tolist() == [1, 4]
    assert np.asarray(terms.selected).tolist() == np.asarray(terms.selected_entropy).tolist()
    close(terms.weights, np.exp(0.4 - h), rtol=1e-5)
    close(terms.loss, np.mean(np.exp(0.4 - h[[1, 4]]) * h[[1, 4]]), rtol=1e-5)
    p = probs_np(logits)
    close(terms.state.mean_prob, p[[1, 4]].mean(0), rtol=1e-5)  # first definition: the mean
    assert bool(terms.state.defined)

    # a defined mean that points at row 4's item removes row 4 (cosine ~ 1), keeps row 1
    mean = jnp.asarray(p[4], jnp.float32)
    terms = eata_loss(logits, valid, EataState(mean, jnp.ones((), bool)), cosine_margin=0.05)
    assert np.flatnonzero(np.asarray(terms.selected)).tolist() == [1]
    close(terms.state.mean_prob, 0.9 * p[4] + 0.1 * p[1], rtol=1e-5)
    # nothing passes: the mean stays
    terms = eata_loss(logits, valid, EataState(mean, jnp.ones((), bool)), cosine_margin=0.0)
    assert not np.asarray(terms.selected).any()
    close(terms.state.mean_prob, p[4], rtol=1e-6)
    assert float(terms.loss) == 0.0


def test_deyo_filters_on_constructed_logits():
    logits = peaked_logits([1.0, 6.0, 2.0, 5.0, 7.0, 4.0], n_items=6)
    valid = jnp.ones(6, bool)
    h = entropy_np(logits)
    # text queries: PLPD = 0, every row of the entropy filter passes, weight exp(0.4 - H) + 1
    text = deyo_loss(logits, None, valid, fraction=0.5, plpd_threshold=0.2)
    assert np.flatnonzero(np.asarray(text.selected_entropy)).tolist() == [1, 3, 4]
    assert np.asarray(text.selected).tolist() == np.asarray(text.selected_entropy).tolist()
    close(text.weights, np.exp(0.4 - h) + 1.0, rtol=1e-5)
    # image queries: the view keeps row 1's prediction (PLPD ~ 0), flattens rows 3 and 4
    view = logits.at[3].set(0.0).at[4].set(0.0)
    image = deyo_loss(logits, view, valid, fraction=0.5, plpd_threshold=0.2)
    p, pv = probs_np(logits), probs_np(view)
    expected_plpd = p.max(1) - pv[np.arange(6), p.argmax(1)]
    close(image.plpd, expected_plpd, rtol=1e-5, atol=1e-6)
    assert np.flatnonzero(np.asarray(image.selected)).tolist() == [3, 4]
    w = np.exp(0.4 - h) + np.exp(expected_plpd)
    close(image.loss, np.mean(w[[3, 4]] * h[[3, 4]]), rtol=1e-5)


def test_deyo_view_is_a_permutation_of_each_images_patches():
    images = jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32).reshape(2, 8, 8, 3)
    key = jax.random.PRNGKey(3)
    view = patch_shuffled_view(images, key, grid=4)
    perms = np.asarray(patch_permutations(key, 2, 16))

    def patches(x):  # (B, 16, 2, 2, 3), row-major over the 4 x 4 grid
        return (
            np.asarray(x)
            .reshape(2, 4, 2, 4, 2, 3)
            .transpose(0, 1, 3, 2, 4, 5)
            .reshape(2, 16, 2, 2, 3)
        )

    original, shuffled = patches(images), patches(view)
    for b in range(2):
        assert sorted(perms[b].tolist()) == list(range(16))
        np.testing.assert_array_equal(shuffled[b], original[b][perms[b]])
    assert not np.array_equal(perms[0], perms[1])  # shuffled per image
    assert not np.array_equal(np.asarray(view), np.asarray(images))
    np.testing.assert_array_equal(patch_shuffled_view(images, key), view)  # seeded
    assert not np.array_equal(patch_shuffled_view(images, jax.random.PRNGKey(4)), view)
    odd = patch_shuffled_view(jnp.ones((1, 10, 9, 1)), key)  # resized to 8 x 8 and back
    assert odd.shape == (1, 10, 9, 1) and np.allclose(odd, 1.0)
    with pytest.raises(ValueError, match="NHWC"):
        patch_shuffled_view(jnp.ones((2, 8)), key)


# --- Per-method behaviour on a toy encoder.


def sar_setup(**overrides):
    params, gallery, queries, _ = toy_problem(seed=13, n_queries=8)
    adapter = make_adapter("sar", params, gallery, learning_rate=1e-2, steps=1, **overrides)
    return adapter, queries


def test_sar_resets_to_the_initial_state_when_the_ema_drops():
    adapter, queries = sar_setup(sar_fraction=1.0, sar_rho=1e-4, sar_reset_threshold=0.0)
    method = methods.get("sar")
    ctx = direct_context(adapter, queries, np.ones(8, bool))
    initial = adapter.constants.initial

    def jitted(ctx):
        return jax.jit(lambda a, o, m, i: method.inner_step(ctx, a, o, m, i))

    # move away from the source state first (threshold 0: no reset), so a reset is visible
    moved = jitted(ctx)(initial.adapted, initial.opt_state, initial.method_state, 0)
    assert int(moved.metrics["num_selected"]) > 0 and int(moved.metrics["sar_reset"]) == 0
    close(moved.metrics["ema"], moved.metrics["loss_second"])  # first value defines the EMA
    close(moved.metrics["perturbation_norm"], 1e-4, rtol=1e-5)
    threshold = 0.5 * float(moved.metrics["loss_second"])
    inner_step = jitted(ctx._replace(config=adapter.config.replace(sar_reset_threshold=threshold)))

    def step_from(ema):
        state = SarState(jnp.float32(ema), jnp.ones((), bool), jnp.int32(0))
        return inner_step(moved.adapted, moved.opt_state, state, 1)

    # new EMA = 0.9 ema + 0.1 L2 with L2 ~ 2 thr: above thr from ema = thr, below from ema = 0
    kept = step_from(threshold)
    # float32 arithmetic against a float64 expectation: a few ulps apart
    close(
        kept.metrics["ema"], 0.9 * threshold + 0.1 * float(kept.metrics["loss_second"]), rtol=1e-6
    )
    assert int(kept.metrics["sar_reset"]) == 0 and bool(kept.method_state.ema_defined)
    assert not np.array_equal(kept.adapted["ln"]["scale"], initial.adapted["ln"]["scale"])
    reset = step_from(0.0)
    close(reset.metrics["ema"], 0.1 * float(reset.metrics["loss_second"]), rtol=1e-6)
    assert float(reset.metrics["ema"]) < threshold and int(reset.metrics["sar_reset"]) == 1
    for a, b in zip(jax.tree.leaves(reset.adapted), jax.tree.leaves(initial.adapted)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(reset.opt_state), jax.tree.leaves(initial.opt_state)):
        np.testing.assert_array_equal(a, b)
    assert not bool(reset.method_state.ema_defined) and float(reset.method_state.ema) == 0.0
    assert int(reset.method_state.num_sar_resets) == 1
    # the cleared EMA does not re-fire: the next step redefines it from its own loss
    again = inner_step(reset.adapted, reset.opt_state, reset.method_state, 2)
    close(again.metrics["ema"], again.metrics["loss_second"])
    assert int(again.metrics["sar_reset"]) == 0


def test_sar_with_an_empty_second_filter_makes_no_update():
    # one query in F1 (threshold = its own entropy); a large ascent raises it above thr
    adapter, queries = sar_setup(sar_fraction=0.125, sar_rho=0.5)
    result = run_stream(adapter, batches_from_array(queries, 8))
    assert result.metrics["num_selected_first"].tolist() == [[1]]
    assert result.metrics["num_selected"].tolist() == [[0]]
    final = result.final_state
    for a, b in zip(
        jax.tree.leaves(final.adapted), jax.tree.leaves(adapter.constants.initial.adapted)
    ):
        np.testing.assert_array_equal(a, b)  # the perturbation is not left behind
    for a, b in zip(
        jax.tree.leaves(final.opt_state), jax.tree.leaves(adapter.constants.initial.opt_state)
    ):
        np.testing.assert_array_equal(a, b)
    assert not bool(final.method_state.ema_defined)


def test_bad_baseline_settings_are_clear_errors():
    params, gallery, queries, _ = toy_problem()
    for name, field, value in [
        ("eata", "eata_fraction", 1.5),
        ("sar", "sar_rho", -0.1),
        ("deyo", "deyo_fraction", -0.5),
        ("shot", "shot_confidence", 2.0),
    ]:
        with pytest.raises(ValueError, match=field):
            make_adapter(name, params, gallery, **{field: value})
    with pytest.raises(ValueError, match="num_gallery"):
        methods.get("eata").init(preset("eata"), dim=6, dtype=jnp.float32)
    text = make_adapter("deyo", params, gallery, deyo_image_queries=True)
    with pytest.raises(ValueError, match="deyo_image_queries=True needs NHWC"):
        text.step(text.init_state(), pad_batch(queries[:4], 4))


# --- Every registered method: its definition on a stream, padding, batch of one, frozen params.

ALL = [*methods.available(), "deyo-image"]
OVERRIDES = {
    "eata": dict(steps=1),  # one step per batch: the running mean is checked batch by batch
    "deyo-image": dict(deyo_plpd_threshold=-2.0),  # PLPD >= -1: F2 = F1
}


def problem_for(name, dtype=jnp.float32):
    if name == "deyo-image":
        params, gallery, queries = toy_image_problem(seed=16, n_queries=14, dtype=dtype)
        return "deyo", params, gallery, queries, None, toy_image_apply
    params, gallery, queries, clean = toy_problem(seed=16, n_queries=14, dtype=dtype)
    return name, params, gallery, queries, clean, toy_apply


def whole_gallery_logits(adapter, apply_fn, params, inputs):
    q = np.asarray(apply_fn(params, inputs), np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return (
        q
        @ np.asarray(adapter.constants.gallery, np.float64).T
        / adapter.config.baseline_temperature
    )


def eata_mean_rule(mean, defined, logits, n_valid, cfg):
    """EATA's running mean after one step, from docs/method.md sec. 6 (numpy)."""
    p, h = probs_np(logits)[:n_valid], entropy_np(logits)[:n_valid]
    kept = np.argsort(h, kind="stable")[: int(cfg.eata_fraction * n_valid)]
    if defined:
        cos = p[kept] @ mean / (np.linalg.norm(p[kept], axis=1) * np.linalg.norm(mean))
        kept = kept[np.abs(cos) < cfg.eata_cosine_margin]
    if len(kept) == 0:
        return mean, defined, 0
    batch_mean = p[kept].mean(0)
    decay = cfg.eata_mean_decay
    return (decay * mean + (1 - decay) * batch_mean if defined else batch_mean), True, len(kept)


def check_definition(name, adapter, apply_fn, params, queries, out):
    """What the first batch (8 queries, full) must show for each method."""
    logits = whole_gallery_logits(adapter, apply_fn, params, queries[:8])
    loss = np.asarray(out.metrics["loss"])
    valid = jnp.ones(8, bool)
    if name == "source":
        close(out.scores, logits * adapter.config.baseline_temperature, rtol=1e-12, atol=1e-14)
    definitions = {
        "tent": lambda z: tent_loss(z, valid),
        "read": lambda z: read_loss(z, valid).loss,
        "shot": lambda z: shot_loss(z, valid).loss,
    }
    if name in definitions:
        close(loss[0], definitions[name](jnp.asarray(logits)), rtol=1e-9)
        assert loss[-1] < loss[0]
    if name == "deyo-image":
        assert np.all(out.metrics["num_selected_entropy"] == 4)  # int(0.5 * 8), distinct H
        assert np.all(out.metrics["num_selected"] == 4)
        assert np.all(out.metrics["plpd"] != 0)  # the shuffled view changes the predictions


@pytest.mark.parametrize("name", ALL)
def test_every_method_on_a_padded_stream_and_batches_of_one(x64, name):
    label = name
    name, params, gallery, queries, clean, apply_fn = problem_for(label, jnp.float64)
    adapter = make_adapter(
        name,
        params,
        gallery,
        apply_fn=apply_fn,
        clean=clean,
        learning_rate=1e-2,
        **OVERRIDES.get(label, {}),
    )
    initial = adapter.constants.initial
    state, first = adapter.step(adapter.init_state(), pad_batch(queries[:8], 8))
    check_definition(label, adapter, apply_fn, params, queries, first)
    after_first = jax.device_get(state)  # ``state`` is donated below

    # the last batch (6 of 8 rows valid): padded rows are masked out of everything, so other
    # filler rows give the same scores, state and metrics
    last = pad_batch(queries[8:], 8)
    other = dict(last, inputs=jnp.concatenate([queries[8:], 3.0 * queries[:2] + 1.0]))
    state_a, out_a = adapter.step(jax.tree.map(jnp.copy, state), last)
    state_b, out_b = adapter.step(state, other)
    close(out_a.scores[:6], out_b.scores[:6], rtol=1e-10)
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
        close(a, b, rtol=1e-10)
    for k, v in out_a.metrics.items():
        close(v, out_b.metrics[k], rtol=1e-9, atol=1e-12)
    assert not out_a.rolled_back and first.metrics.keys() == out_a.metrics.keys()
    final = adapter.params(state_a)
    for part in ("embed", "head"):
        np.testing.assert_array_equal(final[part]["kernel"], params[part]["kernel"])
    if name in ("source", "sar"):
        # source never moves; SAR's toy entropies sit far below 0.2: every step resets
        for a, b in zip(jax.tree.leaves(state_a.adapted), jax.tree.leaves(initial.adapted)):
            np.testing.assert_array_equal(a, b)
        if name == "sar":
            assert np.all(first.metrics["ema"] < 0.2) and np.all(first.metrics["sar_reset"] == 1)
            assert np.all(first.metrics["num_selected"] > 0)
    elif label == "eata":  # the running mean follows its rule, on the padded batch too
        mean, defined = np.zeros(gallery.shape[0]), False
        theta = adapter.params(initial)
        for batch, n_valid, out, after in [
            (queries[:8], 8, first, after_first),
            (queries[8:], 6, out_a, state_a),
        ]:
            logits = whole_gallery_logits(adapter, apply_fn, theta, batch)
            mean, defined, n_kept = eata_mean_rule(mean, defined, logits, n_valid, adapter.config)
            assert int(out.metrics["num_selected"][0]) == n_kept
            close(after.method_state.mean_prob, mean, rtol=1e-9, atol=1e-12)
            assert bool(after.method_state.defined) == defined
            theta = adapter.params(after)
    else:
        assert not np.array_equal(final["ln"]["scale"], params["ln"]["scale"])

    # a stream of batches of one query
    result = run_stream(adapter, batches_from_array(queries[:3], 1))
    for leaf in jax.tree.leaves(result.final_state):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            assert np.all(np.isfinite(leaf))
    for k, v in result.metrics.items():
        assert not np.any(np.isnan(v)), k
    assert not result.rolled_back.any()
    if name in ("eata", "sar", "deyo"):  # int(fraction * 1) = 0: nobody selected, no update
        assert np.all(result.metrics["num_selected"] == 0)
        for a, b in zip(
            jax.tree.leaves(result.final_state.adapted), jax.tree.leaves(initial.adapted)
        ):
            np.testing.assert_array_equal(a, b)
