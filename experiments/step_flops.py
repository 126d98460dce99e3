"""FLOPs of one adaptation step on CLIP ViT-B/16 shapes, from XLA's cost analysis.

    python -m experiments.step_flops [--batch-size 64] [--gallery 25000] [--methods source,tent]

Lowers the jitted step (constant weights, bf16 matmuls, no compilation) and prints
``lowered.cost_analysis()["flops"]``. XLA counts a ``lax.scan`` body once and both branches of
a ``lax.cond`` (the rollback branch re-encodes the batch), so ``source`` (1 step) counts two
forwards, ``F = source / 2``, and a batch of a method with S steps does about
``S * (counted - F)`` FLOPs. Divide by a measured time per batch for the achieved FLOP/s
(docs/benchmarks.md).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import rest_jax
from rest_jax.models import CLIP_IMAGE_ADAPT_RULES, ClipModel, image_encoder, vit_b16


def step_flops(method: str, batch_size: int, gallery_size: int) -> float:
    """``cost_analysis()["flops"]`` of the lowered step of ``method`` (image queries, bf16)."""
    cfg = vit_b16()
    shapes = jax.eval_shape(ClipModel(cfg).init, jax.random.PRNGKey(0))["vision"]
    params = jax.tree.map(lambda s: jnp.full(s.shape, 0.01, s.dtype), shapes)
    gallery = jnp.full((gallery_size, cfg.projection_dim), cfg.projection_dim**-0.5)
    size = cfg.vision.image_size
    batch = {
        "inputs": jnp.zeros((batch_size, size, size, 3)),
        "mask": jnp.ones(batch_size, bool),
    }
    config = rest_jax.preset(method)
    source = (batch["inputs"][:32], gallery[:32]) if config.decoupling else None
    adapter = rest_jax.Adapter.create(
        image_encoder(cfg, jnp.bfloat16),
        params,
        gallery,
        config=config,
        rules=CLIP_IMAGE_ADAPT_RULES,
        source=source,
    )
    lowered = adapter.step_fn.lower(adapter.init_state(), batch, adapter.constants)
    return float(lowered.cost_analysis()["flops"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--gallery", type=int, default=25_000)
    parser.add_argument("--methods", default="source,tent")
    args = parser.parse_args(argv)
    for method in args.methods.split(","):
        flops = step_flops(method, args.batch_size, args.gallery)
        print(f"{method}: {flops / 1e12:.2f} TFLOP as counted (scan body once, both cond branches)")


if __name__ == "__main__":
    main()
