"""Chunked and sharded top-K equal the plain top-K (8 simulated CPU devices in a subprocess)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rest_jax.retrieval import topk


@pytest.mark.parametrize("n,chunk,k", [(100, 16, 5), (64, 64, 3), (37, 8, 8), (50, 10, 1)])
def test_chunked_topk_equals_plain(n, chunk, k):
    key = jax.random.PRNGKey(n)
    q = jax.random.normal(key, (7, 5))
    g = jax.random.normal(jax.random.fold_in(key, 1), (n, 5))
    v0, i0 = jax.lax.top_k(q @ g.T, k)
    v1, i1 = topk(q, g, k, chunk_size=chunk)
    np.testing.assert_array_equal(np.asarray(i0), np.asarray(i1))
    np.testing.assert_allclose(np.asarray(v0), np.asarray(v1), rtol=1e-6)


def test_chunked_topk_breaks_ties_towards_lower_index():
    g = jnp.concatenate([jnp.eye(3)] * 4)  # every basis vector 4 times
    q = jnp.eye(3)
    _, plain = jax.lax.top_k(q @ g.T, 4)
    _, chunked = topk(q, g, 4, chunk_size=5)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(chunked))


def test_topk_errors():
    q, g = jnp.ones((2, 3)), jnp.ones((4, 3))
    with pytest.raises(ValueError, match="k must be in 1..4"):
        topk(q, g, 5)
    with pytest.raises(ValueError, match="chunk_size"):
        topk(q, g, 3, chunk_size=2)


def test_sharded_paths_equal_single_device_on_8_devices():
    script = pathlib.Path(__file__).with_name("sharded_check.py")
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "devices=8" in proc.stdout
    assert "ALL OK" in proc.stdout
