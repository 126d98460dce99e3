"""Sharded top-K, refinement and a rest stream on a device mesh vs one device.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/sharded_check.py

runs them in one process over 8 simulated devices;
``... sharded_check.py --process-id I --num-processes P --port PORT`` runs them in process I
of P (``jax.distributed`` over localhost, CPU collectives by gloo), on a mesh of every
process's devices. The test suite runs the second form: 2 processes of 4 devices each, a mesh
of 8 devices over two hosts.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from toy import toy_apply, toy_problem  # noqa: E402

from rest_jax import Adapter, batches_from_array, preset, run_stream  # noqa: E402
from rest_jax.refinement import refine  # noqa: E402
from rest_jax.retrieval import gallery_mesh, shard_gallery, sharded_top_k, top_k  # noqa: E402


def to_host(x):
    """The whole value of an array, gathered from every process when it is split over
    several (a replicated array is read from a local copy)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    if x.sharding.is_fully_replicated:
        return np.asarray(x.addressable_shards[0].data)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def is_reference_process() -> bool:
    """Whether this process runs the single-device references and compares. Every process
    takes part in the sharded programs and in gathering their results (collectives); only
    process 0 also compiles and runs the one-device versions, which need no other process."""
    return jax.process_index() == 0


def check_top_k(mesh):
    key = jax.random.PRNGKey(0)
    q = jax.random.normal(key, (16, 8))
    g = jax.random.normal(jax.random.fold_in(key, 1), (203, 8))  # not a multiple of 8
    sg = shard_gallery(g, mesh)
    sharded = []
    for chunk in (None, 7):
        v1, i1 = jax.jit(
            lambda q, sg, c=chunk: sharded_top_k(q, sg, 6, mesh, num_items=203, chunk_size=c)
        )(q, sg)
        sharded.append((to_host(v1), to_host(i1)))
    if not is_reference_process():
        return
    v0, i0 = jax.lax.top_k(q @ g.T, 6)
    for v1, i1 in sharded:
        np.testing.assert_array_equal(np.asarray(i0), i1)
        np.testing.assert_allclose(np.asarray(v0), v1, rtol=1e-6)
    v2, i2 = top_k(q, g, 6, chunk_size=50)
    np.testing.assert_array_equal(np.asarray(i0), np.asarray(i2))


def check_refinement(mesh):
    key = jax.random.PRNGKey(1)
    q = jax.random.normal(key, (16, 8))
    q = q / jnp.linalg.norm(q, axis=1, keepdims=True)
    g = jax.random.normal(jax.random.fold_in(key, 1), (64, 8))
    g = g / jnp.linalg.norm(g, axis=1, keepdims=True)
    valid = jnp.arange(16) < 13

    def run(q, g):
        r = refine(q, q @ g.T, g, valid, num_candidates=3, dedup=True, temperature=0.05)
        return r.logits, r.column_mask, r.candidate_ids

    sharded = [to_host(x) for x in jax.jit(run)(q, shard_gallery(g, mesh))]
    if not is_reference_process():
        return
    for a, b in zip(jax.jit(run)(q, g), sharded):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-7)


def counting_equality_checks(fn):
    """``fn()``, and how many cross-process equality checks (``assert_equal``) it ran."""
    calls = []
    original = multihost_utils.assert_equal

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    multihost_utils.assert_equal = counted
    try:
        return fn(), len(calls)
    finally:
        multihost_utils.assert_equal = original


def stream_on_host(result):
    """A stream's answers and final state as numpy arrays, gathered from every process."""
    return result._replace(final_state=jax.tree.map(to_host, result.final_state))


def check_rest_stream(mesh):
    params, gallery, queries, clean = toy_problem(seed=3, n_gallery=64, n_queries=40)
    config = preset("rest", num_candidates=2, learning_rate=1e-2)

    def adapter(m, **options):
        return Adapter.create(
            toy_apply, params, gallery, config=config.replace(**options), rules=[(r"^ln/", True)],
            source=(clean[:16], gallery[:16]), mesh=m,
        )  # fmt: skip

    # Placing the state and the batches runs no cross-process equality check (a collective
    # per leaf, per batch) as jax.device_put onto a multi-process mesh does.
    (on_mesh, sharded), checks = counting_equality_checks(
        lambda: (m := adapter(mesh), run_stream(m, batches_from_array(queries, 16)))
    )
    assert checks == 0, checks
    assert sharded.final_state.adapted["ln"]["scale"].sharding.is_fully_replicated
    assert len(sharded.final_state.adapted["ln"]["scale"].sharding.device_set) == mesh.size
    assert on_mesh.step_fn._cache_size() == 1  # the state keeps its sharding: one compile
    sharded = stream_on_host(sharded)
    # The gallery-scale path: chunked candidate search and a top-K answer, shard by shard
    # (8 rows per shard: two chunks of 5, the second padded).
    chunked = run_stream(
        adapter(mesh, gallery_chunk_size=5, output_top_k=4),
        batches_from_array(queries, 16), keep="top_k", top_k=4,
    )  # fmt: skip
    chunked = stream_on_host(chunked)
    if not is_reference_process():
        return
    single = run_stream(adapter(None), batches_from_array(queries, 16))
    np.testing.assert_allclose(single.scores, sharded.scores, rtol=1e-5, atol=1e-6)
    assert_same_state(single, sharded)
    assert_same_state(single, chunked)
    values, ids = jax.lax.top_k(jnp.asarray(single.scores), 4)
    np.testing.assert_array_equal(chunked.top_ids, np.asarray(ids))
    np.testing.assert_allclose(chunked.top_scores, np.asarray(values), rtol=1e-5, atol=1e-6)


def assert_same_state(a, b):
    for x, y in zip(jax.tree.leaves(a.final_state), jax.tree.leaves(b.final_state)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def check_no_checkpoints_across_processes(mesh):
    params, gallery, queries, _ = toy_problem(seed=3, n_gallery=64, n_queries=16)
    adapter = Adapter.create(
        toy_apply, params, gallery, config=preset("tent"), rules=[(r"^ln/", True)], mesh=mesh
    )
    try:
        run_stream(adapter, batches_from_array(queries, 16), checkpoint_dir="unused")
    except ValueError as error:
        assert "several processes (2)" in str(error), error
    else:
        raise AssertionError("a multi-process run accepted a checkpoint_dir")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.num_processes is not None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            f"localhost:{args.port}", num_processes=args.num_processes, process_id=args.process_id
        )
    print(f"processes={jax.process_count()} devices={jax.device_count()}")
    mesh = gallery_mesh()
    check_top_k(mesh)
    check_refinement(mesh)
    check_rest_stream(mesh)
    if jax.process_count() > 1:
        check_no_checkpoints_across_processes(mesh)
    print("ALL OK")


if __name__ == "__main__":
    main()
