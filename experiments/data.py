"""Loads what a study runs on: the split, the two towers and clean source pairs.

- ``synthworld``: generates the world, trains (or loads the cached) source model.
- ``coco`` / ``flickr``: the Karpathy test split from a local manual directory (TFDS builder)
  and a CLIP checkpoint directory (Hugging Face layout); source pairs from the validation split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
from typing import Any

import jax
import numpy as np

from experiments.config import StudyConfig
from rest_jax import study, training
from rest_jax.data.synthworld import WorldConfig, generate_split
from rest_jax.data.tokenizer import EOT_ID, SOT_ID, WorldTokenizer
from rest_jax.models import CLIP_IMAGE_ADAPT_RULES, CLIP_TEXT_ADAPT_RULES, ClipModel

log = logging.getLogger("rest_jax.study")
NUM_SOURCE_PAIRS = 64


@dataclasses.dataclass(frozen=True)
class StudyData:
    split: study.RetrievalSplit
    towers: study.Towers
    source_pairs: dict[str, tuple[Any, np.ndarray]]  # direction -> (query inputs, targets)
    description: dict[str, Any]


def _subset(split: study.RetrievalSplit, max_images: int) -> study.RetrievalSplit:
    if not max_images or max_images >= len(split.images):
        return split
    keep = split.caption_image_ids < max_images
    return study.RetrievalSplit(
        split.images[:max_images],
        [c for c, k in zip(split.captions, keep) if k],
        split.caption_image_ids[keep],
    )


def source_pairs(towers: study.Towers, pairs: study.RetrievalSplit, n: int) -> dict:
    """Clean pairs for the decoupling reference: n images with their first caption."""
    first = np.array([np.flatnonzero(pairs.caption_image_ids == i)[0] for i in range(n)])
    captions = [pairs.captions[i] for i in first]
    images = towers.image_inputs(pairs.images[:n])
    texts = towers.text_inputs(captions)
    image_emb = study.embed(towers.image_encoder, towers.image_params, images)
    text_emb = study.embed(towers.text_encoder, towers.text_params, texts)
    return {"i2t": (images, text_emb), "t2i": (texts, image_emb)}


def source_model_dir(cfg: StudyConfig, world: WorldConfig, model_cfg) -> pathlib.Path:
    key = json.dumps(
        {"world": world.to_dict(), "model": dataclasses.asdict(model_cfg)}, sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return pathlib.Path(cfg.cache_dir).absolute() / f"source-{digest}"


def clip_towers(model: ClipModel, params, image_inputs, text_inputs) -> study.Towers:
    """Both towers of a CLIP model with its LayerNorm adaptation rules, and the functions that
    turn raw images / captions into their inputs."""
    return study.Towers(
        image_inputs=image_inputs,
        text_inputs=text_inputs,
        image_encoder=model.image_encoder(),
        text_encoder=model.text_encoder(),
        image_params=params["vision"],
        text_params=params["text"],
        image_rules=CLIP_IMAGE_ADAPT_RULES,
        text_rules=CLIP_TEXT_ADAPT_RULES,
    )


def synthworld(cfg: StudyConfig) -> StudyData:
    world = WorldConfig(image_size=cfg.image_size or 32, n_train=cfg.world_train_images)
    tokenizer = WorldTokenizer.build()
    model_cfg = training.SourceModelConfig(
        steps=cfg.source_steps, width=cfg.source_width, layers=cfg.source_layers, seed=cfg.seed
    )
    model = ClipModel(
        training.world_clip_config(
            model_cfg, world.image_size, tokenizer.vocab_size, SOT_ID, EOT_ID
        )
    )
    directory = source_model_dir(cfg, world, model_cfg)
    target = training.init_params(model, model_cfg.seed)
    if (directory / "metadata.json").exists():
        params, meta = training.load_source_model(directory, target)
        log.info("source model: cached at %s", directory)
    else:
        log.info("source model: training (%d steps), cache %s", model_cfg.steps, directory)
        train = generate_split(world, "train", cfg.seed)
        params, losses = training.train_contrastive(
            model,
            target,
            training.image_inputs(train["images"]),
            tokenizer.encode(train["captions"], model_cfg.max_text_len),
            train["caption_image_ids"],
            model_cfg,
        )
        meta = {"final_loss": float(losses[-20:].mean()), "steps": model_cfg.steps}
        training.save_source_model(directory, params, meta)
    params = jax.tree.map(np.asarray, params)
    towers = clip_towers(
        model,
        params,
        image_inputs=training.image_inputs,
        text_inputs=lambda caps: tokenizer.encode(list(caps), model_cfg.max_text_len),
    )
    evaluated = generate_split(world, cfg.split, cfg.seed)
    split = _subset(
        study.RetrievalSplit(
            evaluated["images"],
            list(evaluated["captions"]),
            np.asarray(evaluated["caption_image_ids"]),
        ),
        cfg.max_queries,
    )
    # Source pairs from the source domain's own (clean) training split, never the test split.
    world_small = dataclasses.replace(world, n_train=NUM_SOURCE_PAIRS)
    pairs_raw = generate_split(world_small, "train", cfg.seed + 1)
    pairs = study.RetrievalSplit(
        pairs_raw["images"], list(pairs_raw["captions"]), np.asarray(pairs_raw["caption_image_ids"])
    )
    description = {
        "dataset": "synthworld",
        "split": cfg.split,
        "images": len(split.images),
        "captions": len(split.captions),
        "world": world.to_dict(),
        "source_model": {**dataclasses.asdict(model_cfg), **meta, "cache": str(directory)},
    }
    return StudyData(split, towers, source_pairs(towers, pairs, NUM_SOURCE_PAIRS), description)


def source_fingerprint(data_dir: str, annotation_file: str) -> dict[str, str]:
    """What prepared data is built from: the source directory and its annotation file.

    Args:
      data_dir: the ``--data-dir`` (split file and images).
      annotation_file: the split file's name (``dataset_coco.json``, ...).

    Returns:
      ``{"data_dir": absolute resolved path, "annotation": file name, "annotation_sha256"}``.

    Raises:
      FileNotFoundError: the directory, or its annotation file, does not exist (naming it).
    """
    directory = pathlib.Path(data_dir).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir}: no such directory")
    annotation = directory / annotation_file
    if not annotation.is_file():
        raise FileNotFoundError(
            f"{annotation} not found: --data-dir must hold {annotation_file} (Karpathy's split "
            "file) and the images"
        )
    digest = hashlib.sha256()
    with open(annotation, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {
        "data_dir": str(directory.resolve()),
        "annotation": annotation_file,
        "annotation_sha256": digest.hexdigest(),
    }


def prepared_dir(cfg: StudyConfig, source: dict[str, str]) -> pathlib.Path:
    """The TFDS data directory of a source: ``<cache>/tfds/<dataset>-<digest>``, keyed by the
    source directory and its annotation file's sha256, so that another --data-dir (or an
    edited split file) never reuses data prepared from the first."""
    key = json.dumps({"dataset": cfg.dataset, **source}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return pathlib.Path(cfg.cache_dir).absolute() / "tfds" / f"{cfg.dataset}-{digest}"


def real(cfg: StudyConfig) -> StudyData:
    """COCO / Flickr Karpathy test split with a CLIP checkpoint (local files only).

    The prepared split is cached under ``prepared_dir`` (keyed by the data directory and
    its split file's content); the checkpoint's tokenizer is loaded before anything is
    prepared.
    """
    from rest_jax.data.builders import common
    from rest_jax.data.builders.coco_karpathy import CocoKarpathy
    from rest_jax.data.builders.flickr30k_karpathy import Flickr30kKarpathy
    from rest_jax.data.builders.karpathy import KarpathyConfig
    from rest_jax.models import load_clip, load_tokenizer, preprocess_images

    if not cfg.data_dir or not cfg.checkpoint:
        raise ValueError(f"--dataset {cfg.dataset} needs --data-dir and --checkpoint")
    builder_cls = {"coco": CocoKarpathy, "flickr": Flickr30kKarpathy}[cfg.dataset]
    source = source_fingerprint(cfg.data_dir, builder_cls.ANNOTATION_FILE)
    clip_config, params, info = load_clip(cfg.checkpoint)
    tokenizer = load_tokenizer(
        cfg.checkpoint, context_length=clip_config.text.max_position_embeddings
    )
    size = cfg.image_size or info.image_size
    prepared = prepared_dir(cfg, source)
    builder = builder_cls(
        config=KarpathyConfig(name=f"{size}px", image_size=size), data_dir=str(prepared)
    )
    common.prepare(builder, manual_dir=cfg.data_dir)
    model = ClipModel(clip_config)
    towers = clip_towers(
        model,
        params,
        image_inputs=lambda images: np.asarray(preprocess_images(images, info)),
        text_inputs=lambda caps: np.asarray(tokenizer(list(caps))),
    )

    def read(split_name):
        raw = common.read_split(builder, split_name)
        return study.RetrievalSplit(
            raw["images"], raw["captions"], np.asarray(raw["caption_image_ids"])
        )

    split = _subset(read("test"), cfg.max_queries)
    pairs = read("validation")
    n = min(NUM_SOURCE_PAIRS, len(pairs.images))
    description = {
        "dataset": cfg.dataset,
        "split": "test",
        "images": len(split.images),
        "captions": len(split.captions),
        "checkpoint": cfg.checkpoint,
        "data_source": source,
        "prepared": str(prepared),
    }
    return StudyData(split, towers, source_pairs(towers, pairs, n), description)


def load_study_data(cfg: StudyConfig) -> StudyData:
    if cfg.dataset == "synthworld":
        return synthworld(cfg)
    if cfg.dataset in ("coco", "flickr"):
        return real(cfg)
    raise ValueError(f"unknown dataset {cfg.dataset!r}; expected synthworld, coco or flickr")
