"""Chunked and sharded top-K equal the plain top-K (8 simulated CPU devices in a subprocess,
then 2 processes of 4 devices joined by ``jax.distributed``)."""

from __future__ import annotations

import os
import pathlib
import re
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rest_jax.retrieval import top_k


@pytest.mark.parametrize("n,chunk,k", [(100, 16, 5), (64, 64, 3), (37, 8, 8), (50, 10, 1)])
def test_chunked_topk_equals_plain(n, chunk, k):
    key = jax.random.PRNGKey(n)
    q = jax.random.normal(key, (7, 5))
    g = jax.random.normal(jax.random.fold_in(key, 1), (n, 5))
    v0, i0 = jax.lax.top_k(q @ g.T, k)
    v1, i1 = top_k(q, g, k, chunk_size=chunk)
    np.testing.assert_array_equal(np.asarray(i0), np.asarray(i1))
    np.testing.assert_allclose(np.asarray(v0), np.asarray(v1), rtol=1e-6)


def test_chunked_topk_breaks_ties_towards_lower_index():
    g = jnp.concatenate([jnp.eye(3)] * 4)  # every basis vector 4 times
    q = jnp.eye(3)
    _, plain = jax.lax.top_k(q @ g.T, 4)
    _, chunked = top_k(q, g, 4, chunk_size=5)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(chunked))


def test_topk_errors():
    q, g = jnp.ones((2, 3)), jnp.ones((4, 3))
    with pytest.raises(ValueError, match="k must be in 1..4"):
        top_k(q, g, 5)
    with pytest.raises(ValueError, match="chunk_size"):
        top_k(q, g, 3, chunk_size=2)


SHARDED_CHECK = pathlib.Path(__file__).with_name("sharded_check.py")


def _cpu_env(devices: int) -> dict:
    """The session's XLA flags (tests/conftest.py), with ``devices`` simulated CPU devices."""
    kept = re.sub(
        r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", "")
    )
    flags = f"{kept} --xla_force_host_platform_device_count={devices}".strip()
    return dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_sharded_paths_equal_single_device_across_2_processes():
    """Top-K, refinement and rest streams (plain and chunked) on one mesh of 8 devices over two
    ``jax.distributed`` processes of 4 devices each (multi-host), against one device."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(SHARDED_CHECK), "--process-id", str(i)]
            + ["--num-processes", "2", "--port", str(port)],
            env=_cpu_env(4),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
        assert "processes=2 devices=8" in out
        assert "ALL OK" in out
