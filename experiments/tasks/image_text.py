"""Image-text retrieval: image queries against captions (i2t) and captions against images (t2i).

The embedded default is SynthWorld with its shipped source model; ``--dataset coco|flickr``
reads a Karpathy split and a CLIP checkpoint from local directories (``experiments/data.py``).
Image shifts are the 16 image corruptions at severities 1-5, text shifts the character
corruptions at levels 1-7 and the word corruptions at a rate in (0, 1].
"""

from __future__ import annotations

import numpy as np

from experiments import study
from experiments.tasks.base import Task, TaskData
from rest_jax.data.image_corruptions import IMAGE_CORRUPTIONS, SEVERITIES
from rest_jax.data.text_corruptions import (
    CHAR_CORRUPTIONS,
    CHAR_LEVELS,
    TEXT_CORRUPTIONS,
    WORD_RATES,
)

DIRECTIONS = ("i2t", "t2i")
# Calibrated on the validation split: each costs the source model 38-65% of its clean R@1
# (docs/calibration.md). The text shifts are, per family (character level, word level), the
# one among those costing 30-80% where the oracle has the most room (docs/oracle_room.md).
DEFAULT_SHIFTS = {
    "i2t": "gaussian_noise@3,zoom_blur@5,fog@1,jpeg_compression@3",
    "t2i": "char_swap@7,word_swap@0.3",
}


def full_grid(direction: str) -> list[str]:
    """Every corruption at every level: 16 x 5 image shifts, or the text types at theirs."""
    study.check_direction(direction)
    if direction == "i2t":
        return [f"{name}@{s}" for name in IMAGE_CORRUPTIONS for s in SEVERITIES]
    out = []
    for name in TEXT_CORRUPTIONS:
        levels = CHAR_LEVELS if name in CHAR_CORRUPTIONS else WORD_RATES
        out += [f"{name}@{level}" for level in levels]
    return out


def _unknown(what: str, name: str, known, hint: str = "") -> str:
    return f"unknown {what} {name!r}{hint}; known: {', '.join(known)}"


def _image_shift_problem(spec: str) -> str | None:
    name, at, level = spec.partition("@")
    if name not in IMAGE_CORRUPTIONS:
        hint = " (a text corruption: it shifts t2i queries)" if name in TEXT_CORRUPTIONS else ""
        return f"{spec}: {_unknown('image corruption', name, IMAGE_CORRUPTIONS, hint)}"
    if not at or not level.isdigit() or int(level) not in SEVERITIES:
        return f"{spec}: the severity of an image corruption is an integer 1-5 ({name}@3)"
    return None


def _text_shift_problem(spec: str) -> str | None:
    name, at, level = spec.partition("@")
    if name not in TEXT_CORRUPTIONS:
        hint = " (an image corruption: it shifts i2t queries)" if name in IMAGE_CORRUPTIONS else ""
        return f"{spec}: {_unknown('text corruption', name, TEXT_CORRUPTIONS, hint)}"
    if name in CHAR_CORRUPTIONS:
        if not at or not level.isdigit() or int(level) not in CHAR_LEVELS:
            return f"{spec}: the level of a character corruption is an integer 1-7 ({name}@5)"
        return None
    try:
        rate = float(level) if "." in level else None
    except ValueError:
        rate = None
    if rate is None or not 0.0 < rate <= 1.0:
        return (
            f"{spec}: the level of a word corruption is a rate in (0, 1] written with a "
            f"decimal point ({name}@0.3)"
        )
    return None


def check_shift(spec: str, direction: str) -> None:
    """Raises ValueError when ``spec`` is not a shift of ``direction``'s queries."""
    study.check_direction(direction)
    check = _image_shift_problem if direction == "i2t" else _text_shift_problem
    problem = check(spec)
    if problem:
        raise ValueError(problem)


def _query_rows(split: study.RetrievalSplit, direction: str, captions_per_image: int):
    """The queries of ``direction``: every image (i2t), or the first k captions of each
    image (t2i; k = 0 keeps every caption). The i2t gallery keeps every caption."""
    if direction == "i2t" or not captions_per_image:
        return slice(None)
    ids = split.caption_image_ids
    rank = np.array([np.sum(ids[:i] == ids[i]) for i in range(len(ids))])
    return np.flatnonzero(rank < captions_per_image)


def load(cfg) -> TaskData:
    """SynthWorld (shipped source model) or a Karpathy split with a CLIP checkpoint."""
    from experiments.data import load_study_data  # it imports the study's config

    data = load_study_data(cfg)
    directions = tuple(cfg.direction_list())
    rows = {d: _query_rows(data.split, d, cfg.t2i_captions_per_image) for d in directions}

    def query_inputs(direction: str, spec: str, seed: int):
        domain = study.parse_domain(spec, direction)
        inputs = study.query_inputs(data.split, direction, domain, data.towers, seed)
        return inputs[rows[direction]]

    description = {
        "contents": f"{len(data.split.images)} images, {len(data.split.captions)} captions",
        **data.description,
    }
    return TaskData(
        directions=directions,
        query_side=data.towers.query_side,
        query_inputs=query_inputs,
        galleries={d: study.gallery_embeddings(data.split, d, data.towers) for d in directions},
        relevance={d: study.relevance(data.split, d)[rows[d]] for d in directions},
        source_pairs=data.source_pairs,
        temperature=data.towers.temperature,
        description=description,
    )


TASK = Task(
    name="image-text",
    directions=DIRECTIONS,
    default_shifts=DEFAULT_SHIFTS,
    full_grid=full_grid,
    check_shift=check_shift,
    load=load,
    severity_sweep="gaussian_noise",
)
