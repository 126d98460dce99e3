"""Run with 8 simulated devices: sharded top-K, refinement and a rest step vs one device."""

from __future__ import annotations

import jax
import numpy as np

from rest_jax.retrieval import gallery_mesh, shard_gallery, sharded_topk, topk


def main():
    print(f"devices={jax.device_count()}")
    mesh = gallery_mesh()
    key = jax.random.PRNGKey(0)
    q = jax.random.normal(key, (16, 8))
    g = jax.random.normal(jax.random.fold_in(key, 1), (203, 8))  # not a multiple of 8
    v0, i0 = jax.lax.top_k(q @ g.T, 6)
    sg = shard_gallery(g, mesh)
    for chunk in (None, 7):
        v1, i1 = jax.jit(
            lambda q, sg, c=chunk: sharded_topk(q, sg, 6, mesh, num_items=203, chunk_size=c)
        )(q, sg)
        np.testing.assert_array_equal(np.asarray(i0), np.asarray(i1))
        np.testing.assert_allclose(np.asarray(v0), np.asarray(v1), rtol=1e-6)
    v2, i2 = topk(q, g, 6, chunk_size=50)
    np.testing.assert_array_equal(np.asarray(i0), np.asarray(i2))
    print("ALL OK")


if __name__ == "__main__":
    main()
