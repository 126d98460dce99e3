"""Times the jitted adaptation step: entropy minimisation (tent), tcr and rest.

    python -m experiments.bench_step [--batches 20] [--batch-size 64] [--gallery 5000]

A small random CLIP image tower (no download) adapts its LayerNorms against a random gallery.
Prints, per method: compile time of the first call, then queries/s over the timed batches
(one device sync at the end), and writes the table as JSON when --out is given.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import rest_jax
from rest_jax.models import CLIP_IMAGE_ADAPT_RULES, ClipConfig, ClipModel, TextConfig, VisionConfig


def small_clip(image_size: int, width: int, layers: int) -> ClipConfig:
    return ClipConfig(
        vision=VisionConfig(
            image_size=image_size,
            patch_size=8,
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=layers,
            num_attention_heads=4,
        ),
        text=TextConfig(
            vocab_size=512,
            max_position_embeddings=16,
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=layers,
            num_attention_heads=4,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        ),
        projection_dim=width,
    )


def time_method(name, encoder, params, gallery, source, images, batch_size, batches):
    config = rest_jax.preset(name)
    adapter = rest_jax.Adapter.create(
        encoder, params, gallery, config=config, rules=CLIP_IMAGE_ADAPT_RULES, source=source
    )
    stream = list(rest_jax.batches_from_array(images, batch_size))[: batches + 1]
    state = adapter.init_state()
    start = time.perf_counter()
    state, out = adapter.step(state, stream[0])
    jax.block_until_ready(out.scores)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for batch in stream[1:]:
        state, out = adapter.step(state, batch)
    jax.block_until_ready((state, out.scores))
    elapsed = time.perf_counter() - start
    return {
        "method": name,
        "compile_s": round(compile_s, 3),
        "queries_per_s": round(batch_size * (len(stream) - 1) / elapsed, 1),
        "ms_per_batch": round(1000 * elapsed / (len(stream) - 1), 2),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="tent,tcr,rest")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--gallery", type=int, default=5000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    cfg = small_clip(args.image_size, args.width, args.layers)
    model = ClipModel(cfg)
    params = model.init(jax.random.PRNGKey(0))["vision"]
    rng = np.random.default_rng(0)
    n_images = args.batch_size * (args.batches + 1)
    shape = (n_images, args.image_size, args.image_size, 3)
    images = rng.normal(size=shape).astype(np.float32)
    gallery = jnp.asarray(rng.normal(size=(args.gallery, cfg.projection_dim)), jnp.float32)
    source = (images[:64], gallery[:64])
    encoder = model.image_encoder()
    rows = []
    for name in args.methods.split(","):
        if name not in rest_jax.methods.available():
            print(f"skipping {name}: not a registered method")
            continue
        rows.append(
            time_method(
                name, encoder, params, gallery, source, images, args.batch_size, args.batches
            )
        )
    base = rows[0]["queries_per_s"] if rows else None
    print(
        f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; "
        f"batch {args.batch_size}, gallery {args.gallery}, steps 3"
    )
    print("| method | compile (s) | queries/s | ms/batch | cost vs first |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['compile_s']} | {r['queries_per_s']} | {r['ms_per_batch']} "
            f"| {base / r['queries_per_s']:.2f}x |"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"args": vars(args), "device": str(jax.devices()[0]), "rows": rows}, f, indent=2
            )


if __name__ == "__main__":
    main()
