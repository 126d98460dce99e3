"""Gradient decoupling: the rule against optax's projections, guards, diagnostics, composition."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rest_jax.decoupling import GradientDecouplingState, contrastive_reference, gradient_decoupling
from rest_jax.losses import symmetric_contrastive_loss
from rest_jax.numerics import tree_norm, tree_vdot
from rest_jax.selection import partition


def random_tree(key, scale=1.0):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "ln": {
            "scale": scale * jax.random.normal(k1, (4,)),
            "bias": scale * jax.random.normal(k2, (4,)),
        },
        "proj": scale * jax.random.normal(k3, (3, 2)),
    }


def tree_dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def assert_tree_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def apply(tx, g, params=None):
    params = jax.tree.map(jnp.zeros_like, g) if params is None else params
    state = tx.init(params)
    return tx.update(g, state, params)


@pytest.mark.parametrize("seed", range(6))
def test_conflict_mode_equals_projection_halfspace(seed):
    g = random_tree(jax.random.PRNGKey(seed))
    r = random_tree(jax.random.PRNGKey(100 + seed))
    out, state = apply(gradient_decoupling(r), g)
    expected = optax.projections.projection_halfspace(g, jax.tree.map(jnp.negative, r), 0.0)
    assert_tree_close(out, expected)
    conflict = float(tree_dot(g, r)) < 0
    assert bool(state.projected) == conflict
    if not conflict:  # identity without conflict
        assert_tree_close(out, g, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(4))
def test_orthogonal_mode_equals_projection_hyperplane(seed):
    g = random_tree(jax.random.PRNGKey(seed))
    r = random_tree(jax.random.PRNGKey(50 + seed))
    out, state = apply(gradient_decoupling(r, mode="orthogonal"), g)
    assert_tree_close(out, optax.projections.projection_hyperplane(g, r, 0.0))
    assert abs(float(tree_dot(out, r))) < 1e-5
    assert bool(state.projected)


def test_conflict_case_is_exercised_and_removes_negative_component():
    g = random_tree(jax.random.PRNGKey(0))
    r = jax.tree.map(lambda x: -x + 0.1, g)  # strongly opposed
    assert float(tree_dot(g, r)) < 0
    out, state = apply(gradient_decoupling(r), g)
    assert bool(state.projected) and int(state.num_projected) == 1
    assert abs(float(tree_dot(out, r))) < 1e-4
    assert float(state.cosine) < -0.5


def test_beta_pushes_along_reference():
    g = random_tree(jax.random.PRNGKey(1))
    r = random_tree(jax.random.PRNGKey(2))
    projected, _ = apply(gradient_decoupling(r), g)
    out, _ = apply(gradient_decoupling(r, beta=0.5), g)
    norm = lambda t: jnp.sqrt(tree_dot(t, t))
    expected = jax.tree.map(lambda p, ri: p + 0.5 * norm(projected) * ri / norm(r), projected, r)
    assert_tree_close(out, expected)
    assert float(tree_dot(out, r)) > float(tree_dot(projected, r))


def test_per_leaf_mode_projects_each_leaf_alone():
    g = random_tree(jax.random.PRNGKey(3))
    r = random_tree(jax.random.PRNGKey(4))
    out, _ = apply(gradient_decoupling(r, per_leaf=True), g)
    expected = jax.tree.map(
        lambda gi, ri: optax.projections.projection_halfspace(gi, -ri, 0.0), g, r
    )
    assert_tree_close(out, expected)


@pytest.mark.parametrize("ref_scale", [0.0, 1e-30, 1e-20])
@pytest.mark.parametrize("grad_scale", [0.0, 1e-30, 1.0])
def test_zero_and_tiny_norms_are_finite(ref_scale, grad_scale):
    g = random_tree(jax.random.PRNGKey(5), grad_scale)
    r = random_tree(jax.random.PRNGKey(6), ref_scale)
    for mode in ("conflict", "orthogonal"):
        out, state = apply(gradient_decoupling(r, mode=mode, beta=1.0), g)
        for leaf in jax.tree.leaves((out, state)):
            assert np.all(np.isfinite(np.asarray(leaf)))
        if ref_scale == 0.0:
            assert_tree_close(out, g, rtol=0, atol=0)


def test_zero_reference_is_identity_and_default():
    g = random_tree(jax.random.PRNGKey(7))
    out, state = apply(gradient_decoupling(), g)
    assert_tree_close(out, g, rtol=0, atol=0)
    assert not bool(state.projected) and float(state.cosine) == 0.0


def test_reference_refresh_by_tree_set_and_extra_arg():
    g = random_tree(jax.random.PRNGKey(8))
    r = jax.tree.map(jnp.negative, g)
    tx = gradient_decoupling()
    state = tx.init(g)
    state = optax.tree.set(state, reference=r)
    out, state = tx.update(g, state)
    assert_tree_close(out, jax.tree.map(jnp.zeros_like, g), atol=1e-6)
    # the keyword extra argument overrides and is cached
    r2 = random_tree(jax.random.PRNGKey(9))
    _, state2 = tx.update(g, state, decoupling_reference=r2)
    assert_tree_close(state2.reference, r2, rtol=0, atol=0)


def test_counts_and_cosine_diagnostics():
    r = random_tree(jax.random.PRNGKey(10))
    tx = gradient_decoupling(r)
    state = tx.init(r)
    grads = [r, jax.tree.map(jnp.negative, r), r]
    for g in grads:
        _, state = tx.update(g, state)
    assert int(state.count) == 3 and int(state.num_projected) == 1
    np.testing.assert_allclose(float(state.cosine), 1.0, rtol=1e-6)


def test_inside_chain_with_adamw_and_mode_none_changes_nothing():
    params = random_tree(jax.random.PRNGKey(11))
    g = random_tree(jax.random.PRNGKey(12))
    r = random_tree(jax.random.PRNGKey(13))
    plain = optax.adamw(1e-2)
    chained = optax.chain(gradient_decoupling(r, mode="none"), optax.adamw(1e-2))
    u1, _ = plain.update(g, plain.init(params), params)
    u2, s2 = chained.update(g, chained.init(params), params)
    assert_tree_close(u1, u2, rtol=0, atol=0)
    assert abs(float(s2[0].cosine)) > 0
    projected = optax.chain(gradient_decoupling(jax.tree.map(jnp.negative, g)), optax.sgd(1.0))
    u3, _ = projected.update(g, projected.init(params), params)
    assert_tree_close(u3, jax.tree.map(jnp.zeros_like, g), atol=1e-6)


def test_inside_masked_partition_and_selective_transform():
    params = random_tree(jax.random.PRNGKey(14))
    g = random_tree(jax.random.PRNGKey(15))
    r_ln = jax.tree.map(jnp.negative, g["ln"])
    mask = {"ln": {"scale": True, "bias": True}, "proj": False}
    masked = optax.chain(optax.masked(gradient_decoupling({"ln": r_ln, "proj": None}), mask))
    out, _ = masked.update(g, masked.init(params), params)
    assert_tree_close(out["ln"], jax.tree.map(jnp.zeros_like, g["ln"]), atol=1e-6)
    assert_tree_close(out["proj"], g["proj"], rtol=0, atol=0)

    labels = {"ln": {"scale": "ln", "bias": "ln"}, "proj": "other"}
    part = optax.partition(
        {
            "ln": gradient_decoupling({"scale": r_ln["scale"], "bias": r_ln["bias"]}),
            "other": optax.identity(),
        },
        labels,
    )
    out2, _ = part.update(g, part.init(params), params)
    assert_tree_close(out2, out, atol=1e-6)

    frozen_proj = {"ln": {"scale": False, "bias": False}, "proj": True}
    selective = optax.transforms.selective_transform(
        gradient_decoupling({"ln": r_ln}), freeze_mask=frozen_proj
    )
    out3, _ = selective.update(g, selective.init(params), params)
    assert_tree_close(out3["ln"], out["ln"], atol=1e-6)


def test_under_inject_hyperparams_beta_is_tunable():
    g = random_tree(jax.random.PRNGKey(16))
    r = random_tree(jax.random.PRNGKey(17))
    tx = optax.inject_hyperparams(gradient_decoupling)(reference=r, beta=0.0)
    state = tx.init(g)
    out0, state = tx.update(g, state)
    state.hyperparams["beta"] = jnp.asarray(0.5)
    out1, _ = tx.update(g, state)
    direct, _ = apply(gradient_decoupling(r, beta=0.5), g)
    assert_tree_close(out1, direct)
    assert not np.allclose(np.asarray(out0["proj"]), np.asarray(out1["proj"]))


def test_under_multisteps_accumulates_then_decouples():
    params = random_tree(jax.random.PRNGKey(18))
    g1 = random_tree(jax.random.PRNGKey(19))
    g2 = random_tree(jax.random.PRNGKey(20))
    r = jax.tree.map(lambda a, b: -(a + b), g1, g2)
    tx = optax.MultiSteps(optax.chain(gradient_decoupling(r), optax.sgd(1.0)), every_k_schedule=2)
    state = tx.init(params)
    u1, state = tx.update(g1, state, params)
    assert_tree_close(u1, jax.tree.map(jnp.zeros_like, g1), rtol=0, atol=0)
    u2, state = tx.update(g2, state, params)
    assert_tree_close(
        u2, jax.tree.map(jnp.zeros_like, g1), atol=1e-5
    )  # mean(g) is anti-parallel to r


def test_state_dtypes_and_shapes_stable_under_cond_and_no_recompile():
    params = random_tree(jax.random.PRNGKey(21))
    r = random_tree(jax.random.PRNGKey(22))
    tx = gradient_decoupling(r)
    state = tx.init(params)

    def maybe_update(flag, g, s):
        return jax.lax.cond(flag, lambda: tx.update(g, s)[1], lambda: s)

    new = jax.jit(maybe_update)(True, random_tree(jax.random.PRNGKey(23)), state)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new)):
        assert a.dtype == b.dtype and a.shape == b.shape

    update = jax.jit(tx.update)
    _, s1 = update(random_tree(jax.random.PRNGKey(24)), state)
    _, s2 = update(random_tree(jax.random.PRNGKey(25)), s1)
    assert update._cache_size() == 1
    assert isinstance(s2, GradientDecouplingState) and int(s2.count) == 2


def test_unknown_mode_and_negative_beta_raise():
    with pytest.raises(ValueError, match="mode"):
        gradient_decoupling(mode="sideways")
    with pytest.raises(ValueError, match="beta"):
        gradient_decoupling(beta=-1.0)


def test_contrastive_reference_is_gradient_of_infonce(x64):
    key = jax.random.PRNGKey(26)
    kx, kw, ky = jax.random.split(key, 3)
    x = jax.random.normal(kx, (6, 5))
    params = {
        "w": jax.random.normal(kw, (5, 4)),
        "ln": {"scale": jnp.ones(4), "bias": jnp.zeros(4)},
    }
    targets = jax.random.normal(ky, (6, 4))

    def apply_fn(p, inputs):
        h = inputs @ p["w"]
        h = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-5)
        return h * p["ln"]["scale"] + p["ln"]["bias"]

    mask = {"w": False, "ln": {"scale": True, "bias": True}}
    adapted, frozen = partition(params, mask)
    ref = contrastive_reference(apply_fn, adapted, frozen, x, targets, temperature=0.05)

    def explicit(ln):  # written from the formula, not from the library
        q = apply_fn({"w": params["w"], "ln": ln}, x)
        q = q / jnp.linalg.norm(q, axis=1, keepdims=True)
        t = targets / jnp.linalg.norm(targets, axis=1, keepdims=True)
        z = q @ t.T / 0.05
        i2t = -jnp.mean(jnp.diag(jax.nn.log_softmax(z, 1)))
        t2i = -jnp.mean(jnp.diag(jax.nn.log_softmax(z, 0)))
        return 0.5 * (i2t + t2i)

    assert_tree_close(ref["ln"], jax.grad(explicit)(params["ln"]), rtol=1e-10, atol=1e-12)
    assert ref["w"] is None
    np.testing.assert_allclose(
        float(symmetric_contrastive_loss(apply_fn(params, x), targets, 0.05)),
        float(explicit(params["ln"])),
        rtol=1e-12,
    )


@pytest.mark.parametrize("beta", [0.0, 0.3, 2.0])
def test_mode_none_leaves_the_gradient_untouched_whatever_beta(beta):
    g = random_tree(jax.random.PRNGKey(21))
    r = random_tree(jax.random.PRNGKey(22))
    out, state = apply(gradient_decoupling(r, mode="none", beta=beta), g)
    assert_tree_close(out, g, rtol=0, atol=0)
    expected = tree_dot(g, r) / jnp.sqrt(tree_dot(g, g) * tree_dot(r, r))
    np.testing.assert_allclose(float(state.cosine), float(expected), rtol=1e-5)
    assert not bool(state.projected)


def test_tree_vdot_and_norm_span_every_leaf_in_at_least_float32():
    a = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.array([1.0, -2.0])}
    b = {"w": jnp.ones((2, 3)), "b": jnp.array([3.0, 0.5])}
    assert float(tree_vdot(a, b)) == pytest.approx(15.0 + 3.0 - 1.0)
    assert float(tree_norm(a)) == pytest.approx(np.sqrt(55.0 + 5.0))
    # bf16 leaves accumulate in float32: 300 ones sum to 300 (bf16 would stop at 256)
    ones = {"x": jnp.ones((300,), jnp.bfloat16)}
    assert tree_vdot(ones, ones).dtype == jnp.float32 and float(tree_vdot(ones, ones)) == 300.0
    assert float(tree_vdot({}, {})) == 0.0 and float(tree_norm({"none": None})) == 0.0
