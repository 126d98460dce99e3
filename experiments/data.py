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

from experiments import study, training
from experiments.config import StudyConfig
from rest_jax import pretrained
from rest_jax.data.synthworld import WorldConfig, generate_split
from rest_jax.models import (
    CLIP_IMAGE_ADAPT_RULES,
    CLIP_TEXT_ADAPT_RULES,
    ClipModel,
    contrastive_temperature,
)

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


def world_from_record(record: dict, image_size: int) -> WorldConfig:
    """The WorldConfig a source model was trained on (its ``training.json``), as tuples."""
    world = {k: tuple(v) if isinstance(v, list) else v for k, v in record["world"].items()}
    if image_size and image_size != world["image_size"]:
        raise ValueError(
            f"--image-size {image_size} differs from the source model's {world['image_size']} px"
        )
    return WorldConfig(**world)


def retrained_source_dir(cfg: StudyConfig) -> pathlib.Path:
    """Where ``--retrain-source`` writes: the cache, keyed by the training recipe."""
    from experiments import train_source

    recipe = {
        "world": train_source.WORLD.to_dict(),
        "model": dataclasses.asdict(train_source.MODEL),
        "augment": dataclasses.asdict(train_source.AUGMENT),
        "vocab_size": train_source.VOCAB_SIZE,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return pathlib.Path(cfg.cache_dir).absolute() / f"source-{digest}"


def load_source(cfg: StudyConfig) -> pretrained.WorldSource:
    """The source model: shipped (hash-checked), a directory given, or retrained on request."""
    if cfg.retrain_source:
        if cfg.source_model:
            raise ValueError("--retrain-source and --source-model exclude each other")
        from experiments import train_source

        directory = retrained_source_dir(cfg)
        if not (directory / "training.json").exists():
            log.info("source model: retraining (explicit --retrain-source) into %s", directory)
            train_source.train(directory)
        return pretrained.load_world_source(directory)
    if cfg.source_model:
        return pretrained.load_world_source(cfg.source_model)
    return pretrained.load_world_source()


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
        temperature=float(contrastive_temperature(params["logit_scale"])),
    )


def synthworld(cfg: StudyConfig) -> StudyData:
    source = load_source(cfg)
    world = world_from_record(source.training, cfg.image_size)
    max_len = source.config.text.max_position_embeddings
    log.info(
        "source model: %s (validation clean R@1 %s)",
        source.directory,
        source.training.get("validation_clean_r1"),
    )
    towers = clip_towers(
        ClipModel(source.config),
        jax.tree.map(np.asarray, source.params),
        image_inputs=training.image_inputs,
        text_inputs=lambda caps: source.tokenizer.encode(list(caps), max_len),
    )
    evaluated = generate_split(world, cfg.split, 0)
    split = _subset(
        study.RetrievalSplit(
            evaluated["images"],
            list(evaluated["captions"]),
            np.asarray(evaluated["caption_image_ids"]),
        ),
        cfg.max_queries,
    )
    # Source pairs from the source domain's own (clean) training distribution: a fresh draw
    # (seed 1; the model was trained on seed 0's split), never the evaluated split.
    world_small = dataclasses.replace(world, n_train=NUM_SOURCE_PAIRS)
    pairs_raw = generate_split(world_small, "train", 1)
    pairs = study.RetrievalSplit(
        pairs_raw["images"], list(pairs_raw["captions"]), np.asarray(pairs_raw["caption_image_ids"])
    )
    description = {
        "dataset": "synthworld",
        "split": cfg.split,
        "images": len(split.images),
        "captions": len(split.captions),
        "world": world.to_dict(),
        "source_model": {
            "directory": str(source.directory),
            "sha256": {
                name: pretrained.file_sha256(source.directory / name)
                for name in pretrained.WORLD_SOURCE_FILES
            },
            **{k: source.training.get(k) for k in ("final_loss", "validation_clean_r1", "model")},
        },
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
