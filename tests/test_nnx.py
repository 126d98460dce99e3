"""An NNX model as the query encoder: same numbers as the equal Linen model, adapted model back."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import nnx

import rest_jax
from tests.toy import toy_apply, toy_params

D_IN, WIDTH, DIM = 8, 16, 6


class LinenEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.LayerNorm()(nn.Dense(WIDTH)(x))
        return nn.Dense(DIM)(x)


class NnxEncoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(D_IN, WIDTH, rngs=rngs)
        self.norm = nnx.LayerNorm(WIDTH, rngs=rngs)
        self.fc2 = nnx.Linear(WIDTH, DIM, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)  # RNG state in the module's state

    def __call__(self, x):
        return self.fc2(self.dropout(self.norm(self.fc1(x))))


def problem():
    """Linen params with a non-trivial LayerNorm, the NNX model holding the same weights, data."""
    params = LinenEncoder().init(jax.random.key(0), np.zeros((1, D_IN), np.float32))["params"]
    rng = np.random.default_rng(0)
    params["LayerNorm_0"] = {
        "scale": 1 + 0.1 * rng.normal(size=WIDTH).astype(np.float32),
        "bias": 0.1 * rng.normal(size=WIDTH).astype(np.float32),
    }
    model = NnxEncoder(nnx.Rngs(1))
    model.eval()
    for module, name in (
        (model.fc1, "Dense_0"),
        (model.norm, "LayerNorm_0"),
        (model.fc2, "Dense_1"),
    ):
        for leaf, value in params[name].items():
            getattr(module, leaf)[...] = np.asarray(value)
    queries = rng.normal(size=(40, D_IN)).astype(np.float32) + 0.5
    gallery = rng.normal(size=(20, DIM)).astype(np.float32)
    return params, model, queries, gallery


def test_nnx_stream_equals_linen_stream():
    params, model, queries, gallery = problem()
    config = rest_jax.preset("rest")
    source = (queries[:8] - 0.5, gallery[:8])
    linen = rest_jax.Adapter.create(
        lambda p, x: LinenEncoder().apply({"params": p}, x),
        params,
        gallery,
        config=config,
        source=source,
    )
    assert [p for p, _ in linen.selection.paths] == ["LayerNorm_0/bias", "LayerNorm_0/scale"]
    want = rest_jax.run_stream(linen, rest_jax.batches_from_array(queries, 16))
    adapted = linen.params(want.final_state)["LayerNorm_0"]

    before = jax.tree.map(np.array, nnx.state(model, nnx.Param))  # copies
    for encoder in (model, nnx.split(model)):
        adapter = rest_jax.Adapter.create(encoder, gallery, config=config, source=source)
        assert [p for p, _ in adapter.selection.paths] == ["norm/bias/value", "norm/scale/value"]
        got = rest_jax.run_stream(adapter, rest_jax.batches_from_array(queries, 16))
        np.testing.assert_array_equal(got.scores, want.scores)
        out = adapter.module(got.final_state)
        assert isinstance(out, NnxEncoder) and out is not model
        np.testing.assert_array_equal(out.norm.scale[...], adapted["scale"])
        np.testing.assert_array_equal(out.norm.bias[...], adapted["bias"])
        assert not np.array_equal(out.norm.scale[...], params["LayerNorm_0"]["scale"])
        np.testing.assert_array_equal(out.fc1.kernel[...], model.fc1.kernel[...])
        # The adapted module answers like the Linen model with the adapted weights.
        x = queries[:4]
        adapted_params = linen.params(want.final_state)
        np.testing.assert_allclose(
            out(x), LinenEncoder().apply({"params": adapted_params}, x), rtol=1e-6, atol=1e-6
        )
    # The model handed in is untouched; nnx.update adapts it in place.
    jax.tree.map(np.testing.assert_array_equal, nnx.state(model, nnx.Param), before)
    nnx.update(model, adapter.params(got.final_state))
    np.testing.assert_array_equal(model.norm.scale[...], adapted["scale"])


def test_layernorms_without_a_name_are_found_by_type():
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(
        nnx.Linear(D_IN, WIDTH, rngs=rngs),
        nnx.LayerNorm(WIDTH, rngs=rngs),
        nnx.Linear(WIDTH, DIM, rngs=rngs),
        nnx.RMSNorm(DIM, rngs=rngs),
    )
    gallery = np.random.default_rng(0).normal(size=(10, DIM)).astype(np.float32)
    adapter = rest_jax.Adapter.create(model, gallery, config=rest_jax.preset("tent"))
    assert [p for p, _ in adapter.selection.paths] == [
        "layers/1/bias/value",
        "layers/1/scale/value",
        "layers/3/scale/value",
    ]
    # Explicit rules replace the default ones.
    only = rest_jax.Adapter.create(
        model, gallery, config=rest_jax.preset("tent"), rules=[(r"^layers/3/", True)]
    )
    assert [p for p, _ in only.selection.paths] == ["layers/3/scale/value"]


def test_errors():
    _, model, _, gallery = problem()
    config = rest_jax.preset("tent")
    with pytest.raises(TypeError, match=r"Adapter.create\(model, gallery"):
        rest_jax.Adapter.create(model, gallery, gallery, config=config)
    with pytest.raises(TypeError, match="nnx.State"):
        rest_jax.Adapter.create((nnx.graphdef(model), {"a": 1}), gallery, config=config)
    with pytest.raises(ValueError, match="select no parameter.*fc1/bias/value"):
        rest_jax.Adapter.create(model, gallery, config=config, rules=[("nothing", True)])
    with pytest.raises(TypeError, match="function apply_fn"):
        rest_jax.Adapter.create(np.zeros(3), {}, gallery, config=config)
    with pytest.raises(TypeError, match="needs all three"):
        rest_jax.Adapter.create(toy_apply, toy_params(jax.random.PRNGKey(0)), config=config)
    adapter = rest_jax.Adapter.create(
        toy_apply, toy_params(jax.random.PRNGKey(0)), gallery, config=config
    )
    with pytest.raises(TypeError, match="adapter.params"):
        adapter.module(adapter.init_state())
