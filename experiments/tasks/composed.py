"""Composed image retrieval (CIR): a reference image and a modification text query a gallery
of images for the target (one relevant item per query).

One direction, ``cir``. The query encoder is the CLIP towers as they serve the query plus a
composition (``rest_jax.models.combiner``): the world's shipped combiner (trained by
``python -m experiments.train_combiner``), the zero-shot sum (``--combiner zero-shot``) or a
combiner directory. The gallery holds the image tower's clean embeddings. Shifts hit the
reference image (the 16 image corruptions at severities 1-5: ``gaussian_noise@3``), the
modification text (the text corruptions: ``keyboard@5``, ``synonym_replacement@0.3``), or both
(``IMAGE:TEXT``, ``gaussian_noise@3:keyboard@5``). Data: SynthWorld's composed splits
(``generate_composed_split``), or FashionIQ / CIRR from ``--data-dir`` with a Hugging Face CLIP
``--checkpoint`` (``experiments/composed_data.py``).
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np

from experiments import composed_data, study, training
from experiments.tasks import image_text
from experiments.tasks.base import Task, TaskData
from rest_jax import pretrained
from rest_jax.data.image_corruptions import IMAGE_CORRUPTIONS, corrupt_images
from rest_jax.data.relevance import composed_relevance
from rest_jax.data.text_corruptions import corrupt_texts
from rest_jax.models import contrastive_temperature, image_encoder
from rest_jax.models.combiner import COMPOSED_ADAPT_RULES, composed_encoder

log = logging.getLogger("rest_jax.study")

DIRECTION = "cir"
DIRECTIONS = (DIRECTION,)
BOTH = ":"  # joins an image shift and a text shift that hit the same queries
NUM_SOURCE_PAIRS = 64
# Calibrated on the composed validation split (docs/calibration_composed.md), as for
# image-text: the image shifts cost the source model (towers + shipped combiner) 43-61% of its
# clean R@1; no text shift costs as much (at most 38%), so the text ones are the strongest
# character and word corruptions (31%, 38%); the image-and-text pair costs 50%.
DEFAULT_SHIFTS = {
    DIRECTION: "gaussian_noise@3,fog@1,jpeg_compression@2,brightness@5,ocr@7,"
    "word_deletion@0.35,gaussian_noise@2:word_deletion@0.3",
}


def parts(spec: str) -> tuple[str | None, str | None]:
    """``(image shift, text shift)`` of a spec (None where that input is clean)."""
    if spec == "clean":
        return None, None
    pieces = spec.split(BOTH)
    if len(pieces) == 2:
        return pieces[0], pieces[1]
    if spec.partition("@")[0] in IMAGE_CORRUPTIONS:
        return spec, None
    return None, spec


def check_shift(spec: str, direction: str) -> None:
    """Raises ValueError when ``spec`` is not a composed-query shift."""
    if direction != DIRECTION:
        raise ValueError(f"unknown direction {direction!r} of the composed task; expected cir")
    pieces = spec.split(BOTH)
    if len(pieces) > 2:
        raise ValueError(f"{spec}: at most one image and one text shift, IMAGE{BOTH}TEXT")
    image, text = parts(spec)
    problems = [
        problem
        for problem in (
            image and image_text._image_shift_problem(image),
            text and image_text._text_shift_problem(text),
        )
        if problem
    ]
    if problems:
        raise ValueError("; ".join(problems))


def full_grid(direction: str) -> list[str]:
    """Every image corruption at every severity on the reference, every text corruption at
    its levels on the modification, and the default shifts' image-and-text pair."""
    if direction != DIRECTION:
        raise ValueError(f"unknown direction {direction!r} of the composed task; expected cir")
    both = [s for s in DEFAULT_SHIFTS[DIRECTION].split(",") if BOTH in s]
    return image_text.full_grid("i2t") + image_text.full_grid("t2i") + both


@dataclasses.dataclass(frozen=True)
class ComposedModel:
    """The composed query side: encoder, parameters, and how raw data become inputs."""

    encoder: object  # encoder(params, {"image", "text"}) -> (B, d)
    image_encoder: object  # the image tower: vision params, image inputs -> (B, d) (gallery)
    params: dict
    image_inputs: object  # uint8 images -> image-tower inputs
    text_inputs: object  # texts -> token ids
    description: dict
    temperature: float  # the combiner's training temperature, or CLIP's (zero-shot)


def _combiner(cfg, dim: int, synthworld: bool, source_files: dict | None):
    """(CombinerConfig | None, params | None, description, training temperature | None) of
    ``--combiner``."""
    choice = cfg.combiner
    if choice == "zero-shot" or (choice == "auto" and not synthworld):
        return None, None, {"composition": "zero-shot"}, None
    shipped = choice == "auto"
    combiner = pretrained.load_world_combiner(None if shipped else choice)
    if combiner.config.dim != dim:
        raise ValueError(
            f"combiner {combiner.directory}: dim {combiner.config.dim} differs from the CLIP "
            f"projection_dim {dim}"
        )
    trained_on = combiner.training.get("source_model")
    if shipped and source_files is not None and trained_on != source_files:
        raise ValueError(
            "the shipped combiner was trained on the shipped source model, not on "
            "--source-model; pass --combiner zero-shot or a combiner trained on it "
            "(python -m experiments.train_combiner --source-model DIR --out DIR)"
        )
    description = {
        "composition": "combiner",
        "combiner": str(combiner.directory),
        "combiner_sha256": {
            n: pretrained.file_sha256(combiner.directory / n)
            for n in pretrained.WORLD_COMBINER_FILES
        },
        "combiner_validation": combiner.training.get("validation"),
    }
    temperature = combiner.training.get("recipe", {}).get("temperature")
    if not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(
            f"combiner {combiner.directory}: training.json names no recipe.temperature (the "
            "temperature it was trained with, which the oracle row uses)"
        )
    return combiner.config, jax.tree.map(np.asarray, combiner.params), description, temperature


def _model(clip_config, clip_params, combiner, image_inputs, text_inputs, desc):
    """The composed query side; ``combiner`` is what :func:`_combiner` returns."""
    combiner_config, combiner_params, combiner_desc, combiner_temperature = combiner
    params = {"vision": clip_params["vision"], "text": clip_params["text"]}
    if combiner_config is not None:
        params["combiner"] = combiner_params
    temperature = combiner_temperature or contrastive_temperature(clip_params["logit_scale"])
    return ComposedModel(
        composed_encoder(clip_config, combiner_config),
        image_encoder(clip_config),
        params,
        image_inputs,
        text_inputs,
        {**desc, **combiner_desc},
        float(temperature),
    )


def _synthworld(cfg):
    from experiments.data import load_source, world_from_record

    source = load_source(cfg)
    world = world_from_record(source.training, cfg.image_size)
    files = {n: pretrained.file_sha256(source.directory / n) for n in pretrained.WORLD_SOURCE_FILES}
    shipped_source = files == pretrained.WORLD_SOURCE_SHA256
    combiner = _combiner(cfg, source.config.projection_dim, True, None if shipped_source else files)
    max_len = source.config.text.max_position_embeddings
    model = _model(
        source.config,
        jax.tree.map(np.asarray, source.params),
        combiner,
        training.image_inputs,
        lambda texts: source.tokenizer.encode(list(texts), max_len),
        {"source_model": {"directory": str(source.directory), "sha256": files}},
    )
    split = composed_data.synthworld_split(world, cfg.split, 0, cfg.max_queries or None)
    # Source pairs: a fresh draw of the composed train split (seed 1), never the evaluated one.
    pairs = composed_data.synthworld_split(world, "train", 1, NUM_SOURCE_PAIRS)
    description = {"dataset": "synthworld", "split": cfg.split, "world": world.to_dict()}
    return model, split, pairs, description


def _real(cfg):
    from rest_jax.models import load_clip, load_tokenizer, preprocess_images

    if not cfg.data_dir or not cfg.checkpoint:
        raise ValueError(f"--dataset {cfg.dataset} needs --data-dir and --checkpoint")
    clip_config, clip_params, info = load_clip(cfg.checkpoint)
    tokenizer = load_tokenizer(
        cfg.checkpoint, context_length=clip_config.text.max_position_embeddings
    )
    combiner = _combiner(cfg, clip_config.projection_dim, False, None)
    size = cfg.image_size or info.image_size
    model = _model(
        clip_config,
        clip_params,
        combiner,
        lambda images: np.asarray(preprocess_images(images, info)),
        lambda texts: np.asarray(tokenizer(list(texts))),
        {"checkpoint": cfg.checkpoint},
    )
    split = composed_data.read_composed(cfg.dataset, cfg.data_dir, "val", size)
    split = split.head(cfg.max_queries)
    try:
        pairs, pairs_from = (
            composed_data.read_composed(cfg.dataset, cfg.data_dir, "train", size),
            "train",
        )
    except FileNotFoundError:
        pairs, pairs_from = split, "val (no train split found)"
        log.info("source pairs: no %s train split in %s; using val's", cfg.dataset, cfg.data_dir)
    description = {
        "dataset": cfg.dataset,
        "split": "val",
        "data_dir": cfg.data_dir,
        "source_pairs_from": pairs_from,
    }
    return model, split, pairs.head(NUM_SOURCE_PAIRS), description


def _inputs(model: ComposedModel, split: composed_data.ComposedSplit, spec: str, seed: int):
    image, text = parts(spec)
    images, texts = split.references, split.modifications
    ids = np.arange(len(texts))
    if image:
        name, _, level = image.partition("@")
        images = corrupt_images(images, name, int(level), seed=seed, sample_ids=ids)
    if text:
        name, _, level = text.partition("@")
        value = float(level) if "." in level else int(level)
        texts = corrupt_texts(texts, name, value, seed=seed, sample_ids=ids)
    return {"image": model.image_inputs(images), "text": model.text_inputs(texts)}


def load(cfg) -> TaskData:
    """SynthWorld's composed split (shipped models) or FashionIQ / CIRR with a CLIP checkpoint."""
    if cfg.dataset == "synthworld":
        model, split, pairs, description = _synthworld(cfg)
    elif cfg.dataset in ("fashioniq", "cirr"):
        model, split, pairs, description = _real(cfg)
    else:
        raise ValueError(
            f"the composed task reads synthworld, fashioniq or cirr, not {cfg.dataset}"
        )
    gallery = study.embed(
        model.image_encoder, model.params["vision"], model.image_inputs(split.gallery)
    )
    relevance = composed_relevance(np.asarray(split.target_ids))
    clean_pairs = _inputs(model, pairs, "clean", 0)
    pair_targets = study.embed(
        model.image_encoder,
        model.params["vision"],
        model.image_inputs(pairs.gallery[pairs.target_ids]),
    )
    description = {
        **description,
        "contents": f"{len(split.modifications)} composed queries, {len(split.gallery)} gallery "
        "images",
        "queries": len(split.modifications),
        "gallery": len(split.gallery),
        "ceiling_r1": split.ceiling,
        "table_metrics": ["r1", "r10"],  # R@10: the usual metric of composed retrieval
        **model.description,
    }
    log.info("composed task: %s", description["contents"])
    return TaskData(
        directions=DIRECTIONS,
        query_side=lambda direction: (model.encoder, model.params, COMPOSED_ADAPT_RULES),
        query_inputs=lambda direction, spec, seed: _inputs(model, split, spec, seed),
        galleries={DIRECTION: gallery},
        relevance={DIRECTION: relevance},
        source_pairs={DIRECTION: (clean_pairs, pair_targets)},
        temperature=model.temperature,
        description=description,
    )


TASK = Task(
    name="composed",
    directions=DIRECTIONS,
    default_shifts=DEFAULT_SHIFTS,
    full_grid=full_grid,
    check_shift=check_shift,
    load=load,
    severity_sweep="gaussian_noise",
    datasets=composed_data.COMPOSED_DATASETS,
)
