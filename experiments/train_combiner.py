"""Trains the world's composed-query combiner and writes a combiner directory.

    python -m experiments.train_combiner --out rest_jax/assets/world_combiner

On the composed train split of the source model's world (``generate_composed_split``), the
frozen source towers embed every reference image, modification text and target image once;
the combiner (``rest_jax.models.combiner``, CLIP4Cir-style) then learns, with AdamW, the
InfoNCE loss of each composed query against its batch's targets and references

    L = -log softmax_j(q . c_j / tau)[target],   c = [targets of the batch ; references],

so that the reference (one modification away from the target) is a negative, as in the
task's gallery. It measures R@1 and R@10 on the composed validation split (gallery: all its
images) for the combiner and the zero-shot composition, writes ``config.json``,
``model.safetensors`` and ``training.json`` (``rest_jax.pretrained``) and prints the files'
SHA-256; to ship a retrained combiner, replace ``WORLD_COMBINER_SHA256`` in
``rest_jax/pretrained.py`` with them. Deterministic for a seed on one machine and set of
versions.
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
import jax.numpy as jnp
import numpy as np
import optax

from experiments import study, training
from rest_jax import pretrained
from rest_jax.data.relevance import composed_relevance
from rest_jax.data.synthworld import WorldConfig, generate_composed_split
from rest_jax.metrics import retrieval_metrics
from rest_jax.models import ClipModel
from rest_jax.models.combiner import (
    Combiner,
    CombinerConfig,
    init_combiner,
    zero_shot_composition,
)
from rest_jax.numerics import l2_normalize


@dataclasses.dataclass(frozen=True)
class CombinerTraining:
    """The combiner's recipe (the shipped one: about a minute on 2 CPU cores).

    Attributes:
      hidden: the combiner's width.
      n_train: composed training triples.
      steps, batch_size, learning_rate, weight_decay: the AdamW schedule (cosine decay).
      temperature: tau of the InfoNCE loss.
      seed: initialisation and batch order.
    """

    hidden: int = 256
    n_train: int = 10_000
    steps: int = 3000
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.02
    seed: int = 0


RECIPE = CombinerTraining()


def composed_features(source: pretrained.WorldSource, split: dict) -> dict[str, np.ndarray]:
    """Normalised source-model features of a composed split: ``reference`` and ``target``
    image features (Q, d), ``text`` modification features (Q, d), ``gallery`` (2Q, d)."""
    model = ClipModel(source.config)
    params = jax.tree.map(np.asarray, source.params)
    max_len = source.config.text.max_position_embeddings
    images = study.embed(
        model.image_encoder(), params["vision"], training.image_inputs(split["images"])
    )
    tokens = source.tokenizer.encode(list(split["modifications"]), max_len)
    return {
        "reference": images[split["reference_ids"]],
        "target": images[split["target_ids"]],
        "text": study.embed(model.text_encoder(), params["text"], tokens),
        "gallery": images,
    }


def composed_metrics(queries: np.ndarray, gallery: np.ndarray, target_ids) -> dict[str, float]:
    """R@1/5/10 of (Q, d) composed queries (normalised here) against the gallery."""
    q = np.asarray(l2_normalize(jnp.asarray(queries, jnp.float32)))
    return retrieval_metrics(q @ gallery.T, composed_relevance(np.asarray(target_ids)))


def fit(
    features: dict[str, np.ndarray], recipe: CombinerTraining, progress: bool = True
) -> tuple[CombinerConfig, dict, np.ndarray]:
    """Trains a combiner on precomputed features; returns its config, params and losses."""
    config = CombinerConfig(dim=features["text"].shape[1], hidden=recipe.hidden)
    module = Combiner(config)
    params = init_combiner(config, recipe.seed)
    schedule = optax.cosine_decay_schedule(recipe.learning_rate, recipe.steps)
    optimizer = optax.adamw(schedule, weight_decay=recipe.weight_decay)
    opt_state = optimizer.init(params)
    ref, txt, tgt = (jnp.asarray(features[k]) for k in ("reference", "text", "target"))

    @jax.jit
    def step(params, opt_state, ids):
        def loss_fn(p):
            q = l2_normalize(module.apply({"params": p}, ref[ids], txt[ids]))
            candidates = jnp.concatenate([tgt[ids], ref[ids]])
            logits = q @ candidates.T / recipe.temperature
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(ids)), jnp.arange(len(ids))])

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(recipe.seed + 1)
    n = len(ref)
    batch = min(recipe.batch_size, n)
    losses = np.zeros(recipe.steps, np.float32)
    order = rng.permutation(n)
    cursor = 0
    for s in range(recipe.steps):
        if cursor + batch > n:
            order, cursor = rng.permutation(n), 0
        ids = order[cursor : cursor + batch]
        cursor += batch
        params, opt_state, loss = step(params, opt_state, jnp.asarray(ids))
        losses[s] = float(loss)
        if progress and (s + 1) % 500 == 0:
            print(f"step {s + 1}/{recipe.steps} loss {losses[max(0, s - 99) : s + 1].mean():.3f}")
    return config, jax.tree.map(np.asarray, params), losses


def train(
    out: pathlib.Path,
    recipe: CombinerTraining = RECIPE,
    source_dir: str | None = None,
    n_validation: int | None = None,
    progress: bool = True,
) -> dict[str, str]:
    """Trains the combiner on the source model's world and writes the directory ``out``.

    Args:
      out: the combiner directory to write.
      recipe: the training recipe.
      source_dir: a source-model directory; None is the shipped (hash-checked) one.
      n_validation: composed validation queries (None: the split's default size).
      progress: print the loss every 500 steps.

    Returns:
      the written files' SHA-256.
    """
    from experiments.data import world_from_record

    start = time.perf_counter()
    source = pretrained.load_world_source(source_dir)
    world: WorldConfig = world_from_record(source.training, 0)
    train_split = generate_composed_split(world, "train", recipe.seed, n=recipe.n_train)
    features = composed_features(source, train_split)
    config, params, losses = fit(features, recipe, progress)
    val = generate_composed_split(world, "validation", 0, n=n_validation)
    val_features = composed_features(source, val)
    module = Combiner(config)
    combined = module.apply({"params": params}, val_features["reference"], val_features["text"])
    zero_shot = zero_shot_composition(val_features["reference"], val_features["text"])
    metrics = {
        name: {
            k: round(v, 2)
            for k, v in composed_metrics(q, val_features["gallery"], val["target_ids"]).items()
            if k in ("r1", "r5", "r10")
        }
        for name, q in (("combiner", combined), ("zero-shot", zero_shot))
    }
    record = {
        "recipe": dataclasses.asdict(recipe),
        "world": world.to_dict(),
        "source_model": {
            name: pretrained.file_sha256(source.directory / name)
            for name in pretrained.WORLD_SOURCE_FILES
        },
        "final_loss": round(float(losses[-100:].mean()), 4),
        "train_seconds": round(time.perf_counter() - start),
        "validation_queries": len(val["target_ids"]),
        "validation": metrics,
        "validation_r1": metrics["combiner"]["r1"],
        "versions": {"python": platform.python_version(), "jax": jax.__version__},
        "command": " ".join(["python -m experiments.train_combiner", *sys.argv[1:]]),
    }
    return pretrained.save_world_combiner(out, config, params, record)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.train_combiner", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="directory to write the combiner to")
    parser.add_argument("--source-model", default=None, help="source-model directory")
    parser.add_argument("--steps", type=int, default=RECIPE.steps, help="training steps")
    parser.add_argument("--n-train", type=int, default=RECIPE.n_train, help="training triples")
    parser.add_argument("--hidden", type=int, default=RECIPE.hidden, help="combiner width")
    args = parser.parse_args(argv)
    recipe = dataclasses.replace(RECIPE, steps=args.steps, n_train=args.n_train, hidden=args.hidden)
    hashes = train(pathlib.Path(args.out), recipe, args.source_model)
    record = json.loads((pathlib.Path(args.out) / "training.json").read_text())
    print(json.dumps({k: record[k] for k in ("final_loss", "train_seconds", "validation")}))
    print("WORLD_COMBINER_SHA256 = " + json.dumps(hashes, indent=4))


if __name__ == "__main__":
    main()
