"""A one-minute demo of online adaptation on a random LayerNorm encoder (no data, no download).

    python -m experiments.demo

A random MLP+LayerNorm encoder embeds "clean" inputs into a gallery; the stream brings the same
inputs under a shift (scale, offset, noise). The script prints R@1 of the source model and of
each method, adapting only the LayerNorm parameters.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import rest_jax


def encoder(params, x):
    """x (B, d_in) -> tanh dense -> LayerNorm (the adapted part) -> dense -> (B, d)."""
    h = jnp.tanh(x @ params["embed"])
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    h = (h - mean) / jnp.sqrt(var + 1e-5) * params["ln"]["scale"] + params["ln"]["bias"]
    return h @ params["head"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="source,tent,tcr,rest")
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    d_in, width, dim = 32, 64, 32
    params = {
        "embed": jnp.asarray(rng.normal(size=(d_in, width)) / np.sqrt(d_in), jnp.float32),
        "ln": {"scale": jnp.ones(width), "bias": jnp.zeros(width)},
        "head": jnp.asarray(rng.normal(size=(width, dim)) / np.sqrt(width), jnp.float32),
    }
    clean = rng.normal(size=(args.queries, d_in)).astype(np.float32)
    gallery = encoder(params, clean)
    shifted = (1.8 * clean + 0.9 + 0.6 * rng.normal(size=clean.shape)).astype(np.float32)
    source = (clean[:64], gallery[:64])
    relevant = np.arange(args.queries)[:, None]
    for name in args.methods.split(","):
        adapter = rest_jax.Adapter.create(
            encoder, params, gallery, config=rest_jax.preset(name), source=source, seed=args.seed
        )
        result = rest_jax.run_stream(adapter, rest_jax.batches_from_array(shifted, 64))
        m = rest_jax.retrieval_metrics(result.scores, relevant, result.query_ids)
        print(f"{name:>7}: R@1 {m['r1']:6.2f}  R@5 {m['r5']:6.2f}  mAP {m['map']:6.2f}")
    jax.effects_barrier()


if __name__ == "__main__":
    main()
