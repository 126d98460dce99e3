"""Trains the world's source model from scratch and writes a source-model directory.

    python -m experiments.train_source --out rest_jax/assets/world_source

Generates SynthWorld's training split, learns the subword tokenizer on its captions, trains
the CLIP two-tower contrastively with the training augmentations (``rest_jax.augment``),
measures clean R@1 on the validation split, and writes ``config.json``, ``model.safetensors``,
``tokenizer.json`` and ``training.json`` (``rest_jax.pretrained``). It prints the files'
SHA-256; to ship a retrained model, replace ``WORLD_SOURCE_SHA256`` in
``rest_jax/pretrained.py`` with them. Deterministic for a seed on one machine and set of
versions; float rounding differs between CPUs, which is why the result is shipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import sys
import time

import jax
import numpy as np

from experiments import study, training
from experiments.augment import AugmentConfig, augment_captions, augment_images
from experiments.data import clip_towers
from rest_jax import pretrained
from rest_jax.data.subword import SubwordTokenizer
from rest_jax.data.synthworld import WorldConfig, generate_split
from rest_jax.data.tokenizer import EOT_ID, SOT_ID
from rest_jax.models import ClipModel

# The shipped model's recipe (README "Source model"; ~25 minutes on 2 CPU cores). The world is
# SynthWorld with 40k training images and somewhat less ambiguous captions (fewer synonyms,
# fewer single-object captions, the background always named), so that a small model can
# reach clean R@1 of the order of CLIP's on COCO.
WORLD = WorldConfig(
    n_train=40_000,
    p_synonym=0.15,
    caption_type_weights=(0.05, 0.4, 0.45, 0.1),
    p_mention_background=1.0,
)
MODEL = training.SourceModelConfig(patch_size=4, batch_size=128, steps=9000, max_text_len=48)
AUGMENT = AugmentConfig()
VOCAB_SIZE = 1024


def clean_validation_r1(model: ClipModel, params, tokenizer, world: WorldConfig, max_len: int):
    """Clean R@1 of both directions on the validation split (t2i: first caption per image)."""
    towers = clip_towers(
        model, params, training.image_inputs, lambda caps: tokenizer.encode(list(caps), max_len)
    )
    raw = generate_split(world, "validation", 0)
    split = study.RetrievalSplit(
        raw["images"], list(raw["captions"]), np.asarray(raw["caption_image_ids"])
    )
    out = {}
    first = np.array(
        [np.flatnonzero(split.caption_image_ids == i)[0] for i in range(len(raw["images"]))]
    )
    for direction in ("i2t", "t2i"):
        gallery = study.gallery_embeddings(split, direction, towers)
        encoder, params_q, _ = towers.query_side(direction)
        clean = study.query_inputs(split, direction, study.Domain("clean", "clean"), towers, 0)
        relevant = study.relevance(split, direction)
        rows = slice(None) if direction == "i2t" else first
        out[direction] = study.clean_retrieval(
            encoder, params_q, clean[rows], gallery, relevant[rows]
        )["r1"]
    return out


def train(
    out: pathlib.Path,
    world: WorldConfig = WORLD,
    model_cfg: training.SourceModelConfig = MODEL,
    augment: AugmentConfig = AUGMENT,
    vocab_size: int = VOCAB_SIZE,
    progress: bool = True,
) -> dict[str, str]:
    """Trains and writes the source-model directory ``out``; returns the files' SHA-256."""
    start = time.perf_counter()
    train_split = generate_split(world, "train", model_cfg.seed)
    tokenizer = SubwordTokenizer.train(train_split["captions"], vocab_size)
    config = training.world_clip_config(
        model_cfg, world.image_size, tokenizer.vocab_size, SOT_ID, EOT_ID
    )
    model = ClipModel(config)
    params = training.init_params(model, model_cfg.seed)
    images, captions = train_split["images"], list(train_split["captions"])
    rng = np.random.default_rng(model_cfg.seed + 1)

    def make_batch(picks, caption_ids):
        batch_images = augment_images(images[picks], augment, rng)
        batch_captions = augment_captions([captions[i] for i in caption_ids], augment, rng)
        return (
            training.image_inputs(batch_images),
            tokenizer.encode(batch_captions, model_cfg.max_text_len),
        )

    params, losses = training.train_contrastive_batches(
        model,
        params,
        make_batch,
        train_split["caption_image_ids"],
        len(images),
        model_cfg,
        progress=progress,
    )
    params = jax.tree.map(np.asarray, params)
    seconds = time.perf_counter() - start
    record = {
        "world": world.to_dict(),
        "model": dataclasses.asdict(model_cfg),
        "augment": dataclasses.asdict(augment),
        "vocab_size": tokenizer.vocab_size,
        "final_loss": round(float(losses[-50:].mean()), 4),
        "train_seconds": round(seconds),
        "validation_clean_r1": clean_validation_r1(
            model, params, tokenizer, world, model_cfg.max_text_len
        ),
        "versions": {"python": platform.python_version(), "jax": jax.__version__},
        "command": " ".join(["python -m experiments.train_source", *sys.argv[1:]]),
    }
    return pretrained.save_world_source(out, config, params, tokenizer, record)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.train_source", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="directory to write the model to")
    parser.add_argument("--steps", type=int, default=MODEL.steps, help="training steps")
    parser.add_argument("--patch-size", type=int, default=MODEL.patch_size)
    parser.add_argument("--width", type=int, default=MODEL.width)
    parser.add_argument("--layers", type=int, default=MODEL.layers)
    parser.add_argument("--batch-size", type=int, default=MODEL.batch_size)
    args = parser.parse_args(argv)
    model_cfg = dataclasses.replace(
        MODEL,
        steps=args.steps,
        patch_size=args.patch_size,
        width=args.width,
        layers=args.layers,
        batch_size=args.batch_size,
    )
    hashes = train(pathlib.Path(args.out), model_cfg=model_cfg)
    record = json.loads((pathlib.Path(args.out) / "training.json").read_text())
    print(
        json.dumps({k: record[k] for k in ("final_loss", "train_seconds", "validation_clean_r1")})
    )
    print("WORLD_SOURCE_SHA256 = " + json.dumps(hashes, indent=4))


if __name__ == "__main__":
    main()
