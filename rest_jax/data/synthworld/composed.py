"""Composed queries: a reference scene, a modification text and the target scene."""

from __future__ import annotations

from typing import Any

import numpy as np

from rest_jax.data.synthworld.captions import _Draws, _with_article, generate_captions
from rest_jax.data.synthworld.render import render_scenes
from rest_jax.data.synthworld.scenes import SCENE_KEYS, _conflicts, grid_cells, sample_scenes
from rest_jax.data.synthworld.words import (
    BACKGROUND_KIND_WORDS,
    BACKGROUND_KINDS,
    BACKGROUND_TONES,
    COLOUR_RGB,
    COLOURS,
    MODIFICATION_TEMPLATES,
    MODIFICATIONS,
    SHAPES,
    SIZES,
)
from rest_jax.data.synthworld.world_config import WorldConfig, split_rng


def _select(scenes: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx].copy() for k, v in scenes.items()}


def _referring_expression(scenes, i: int, slot: int) -> str | None:
    """'the red circle' (or 'the small red circle') if it picks out exactly one object."""
    valid = scenes["object_valid"][i]
    same = (
        valid
        & (scenes["object_shape"][i] == scenes["object_shape"][i, slot])
        & (scenes["object_colour"][i] == scenes["object_colour"][i, slot])
    )
    colour = COLOURS[scenes["object_colour"][i, slot]]
    shape = SHAPES[scenes["object_shape"][i, slot]]
    if same.sum() == 1:
        return f"the {colour} {shape}"
    same &= scenes["object_size"][i] == scenes["object_size"][i, slot]
    if same.sum() == 1:
        return f"the {SIZES[scenes['object_size'][i, slot]]} {colour} {shape}"
    return None


def _fits(scenes, i: int) -> bool:
    """No two valid objects of scene i overlap (nested pairs excepted)."""
    one = {k: scenes[k][i : i + 1] for k in ("object_x", "object_y", "object_radius")}
    return not _conflicts(
        one["object_x"],
        one["object_y"],
        one["object_radius"],
        scenes["object_valid"][i : i + 1],
        scenes["object_container"][i : i + 1],
    ).any()


def _modify(target, i, config, draws, rng_values) -> tuple[int, str] | None:
    """Applies one random modification to scene i of ``target`` in place; returns its text."""
    kind = draws.index(len(MODIFICATIONS))
    name = MODIFICATIONS[kind]
    templates = MODIFICATION_TEMPLATES[name]
    named = np.nonzero(target["object_mentionable"][i])[0].tolist()
    nested = set(np.nonzero(target["object_container"][i] >= 0)[0].tolist())
    nested |= {int(c) for c in target["object_container"][i] if c >= 0}
    if name == "background":
        if draws.chance(0.5):
            old = int(target["background_tone"][i])
            target["background_tone"][i] = 1 - old
            level = 0.81 if old == 1 else 0.19
            target["background_rgb"][i] += level - target["background_rgb"][i].mean()
            new = BACKGROUND_TONES[1 - old]
        else:
            old = int(target["background_kind"][i])
            new_kind = (old + 1 + draws.index(len(BACKGROUND_KINDS) - 1)) % len(BACKGROUND_KINDS)
            target["background_kind"][i] = new_kind
            new = BACKGROUND_KIND_WORDS[BACKGROUND_KINDS[new_kind]][0]
        return kind, draws.choice(templates).format(new=new)
    if name == "add":
        free = [j for j in range(config.max_objects) if not target["object_valid"][i, j]]
        if not free:
            return None
        j = free[0]
        shape_id = SHAPES.index(draws.choice(config.shapes))
        colour_id = COLOURS.index(draws.choice(config.colours))
        size = draws.index(3)
        target["object_shape"][i, j], target["object_colour"][i, j] = shape_id, colour_id
        target["object_size"][i, j] = size
        target["object_radius"][i, j] = config.object_radius[size]
        target["object_rgb"][i, j] = COLOUR_RGB[colour_id]
        target["object_angle"][i, j] = 0.0
        target["object_container"][i, j] = -1
        target["object_valid"][i, j] = target["object_mentionable"][i, j] = True
        r = config.object_radius[size]
        for x, y in rng_values:
            target["object_x"][i, j] = r + 0.02 + (1 - 2 * r - 0.04) * x
            target["object_y"][i, j] = r + 0.02 + (1 - 2 * r - 0.04) * y
            if _fits(target, i):
                target["n_objects"][i] += 1
                phrase = f"{SIZES[size]} {COLOURS[colour_id]} {SHAPES[shape_id]}"
                return kind, draws.choice(templates).format(new=_with_article(phrase))
        target["object_valid"][i, j] = target["object_mentionable"][i, j] = False
        return None
    # Nested pairs are only recoloured: reshaping, resizing or removing either would break them.
    candidates = [j for j in named if name == "colour" or j not in nested]
    if name == "remove" and len(named) < 2:
        return None
    if not candidates:
        return None
    slot = draws.choice(candidates)
    ref = _referring_expression(target, i, slot)
    if ref is None:
        return None
    template = draws.choice(templates)
    if name == "remove":
        target["object_valid"][i, slot] = target["object_mentionable"][i, slot] = False
        target["n_objects"][i] -= 1
        return kind, template.format(ref=ref)
    if name == "colour":
        old = COLOURS[target["object_colour"][i, slot]]
        others = [c for c in config.colours if c != old]
        container = target["object_container"][i, slot]
        if container >= 0:  # a nested child keeps a colour unlike its container's
            others = [
                c for c in others if COLOURS.index(c) != target["object_colour"][i, container]
            ]
        new = draws.choice(others)
        cid = COLOURS.index(new)
        # Keep the object's brightness jitter: scale the new base colour by old / old base.
        old_base = COLOUR_RGB[target["object_colour"][i, slot]]
        gain = target["object_rgb"][i, slot].mean() / old_base.mean()
        target["object_rgb"][i, slot] = np.clip(COLOUR_RGB[cid] * gain, 0.0, 1.0)
        target["object_colour"][i, slot] = cid
        return kind, template.format(ref=ref, new=new)
    if name == "shape":
        old = SHAPES[target["object_shape"][i, slot]]
        new = draws.choice([s for s in config.shapes if s != old] or [old])
        if new == old:
            return None
        target["object_shape"][i, slot] = SHAPES.index(new)
        return kind, template.format(ref=ref, new=new)
    old_size = int(target["object_size"][i, slot])
    new_size = (old_size + 1 + draws.index(2)) % 3
    old_radius = float(target["object_radius"][i, slot])
    target["object_size"][i, slot] = new_size
    target["object_radius"][i, slot] = config.object_radius[new_size]
    x, y, r = (
        target["object_x"][i, slot],
        target["object_y"][i, slot],
        config.object_radius[new_size],
    )
    if _fits(target, i) and r + 0.02 <= min(x, y, 1 - x, 1 - y):
        return kind, template.format(ref=ref, new=SIZES[new_size])
    target["object_size"][i, slot], target["object_radius"][i, slot] = old_size, old_radius
    return None


def generate_composed(config: WorldConfig, n: int, seed: int = 0) -> dict[str, Any]:
    """Composed-query records: reference image + modification text -> target image.

    Each target is its reference scene with one modification applied (recolour, change shape,
    resize, remove or add an object, change the background's kind or tone); everything else
    (other objects, positions, texture and sensor noise) is kept. The referred object is named
    unambiguously ("the red circle", or "the small red circle" when needed).

    Args:
      config: the world's knobs.
      n: number of queries.
      seed: base seed (SeedSequence([seed, 3])).

    Returns:
      dict with ``images`` uint8 [2n, S, S, 3] (references 0..n-1, then targets n..2n-1; use
      them all as the gallery), ``image_ids`` int32 [2n], ``reference_ids`` int32 [n],
      ``target_ids`` int32 [n], ``modifications`` list[str] [n], ``modification_kind`` int32 [n]
      (index in MODIFICATIONS), captions of every image (as ``generate_split``) and the scene
      arrays of all 2n images.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return _composed(config, n, split_rng(seed, "composed"))


# Queries per composed split of the world (each query adds a reference and a target image to
# the gallery: the test split's gallery holds 2000 images).
COMPOSED_SPLIT_SIZES = {"train": 10_000, "validation": 500, "test": 1_000}


def generate_composed_split(
    config: WorldConfig, split: str, seed: int = 0, n: int | None = None
) -> dict[str, Any]:
    """One composed split of the world: train, validation or test triples and their gallery.

    Deterministic in (config, split, seed, n); the three splits draw from independent streams
    (SeedSequence([seed, 4 + split index])), so no triple is shared between them. The gallery
    of a split is all its 2n images (every reference and every target): the reference, one
    modification away from the target, is the hardest negative. Relevance: the target alone
    (:func:`rest_jax.data.relevance.composed_relevance`).

    Args:
      config: the world's knobs (the source model's world).
      split: "train", "validation" or "test".
      seed: base seed.
      n: queries; default :data:`COMPOSED_SPLIT_SIZES` [split]. Every modification kind is
        drawn with the same probability, so a split of a few dozen queries holds them all.

    Returns:
      the dict of :func:`generate_composed`, plus ``split``.
    """
    if split not in COMPOSED_SPLIT_SIZES:
        raise ValueError(
            f"unknown composed split {split!r}; expected one of {tuple(COMPOSED_SPLIT_SIZES)}"
        )
    n = COMPOSED_SPLIT_SIZES[split] if n is None else int(n)
    if n < 1:
        raise ValueError(f"a composed split needs n >= 1 queries, got {n}")
    out = _composed(config, n, split_rng(seed, f"composed_{split}"))
    out["split"] = split
    return out


def _content_keys(scenes: dict[str, np.ndarray]) -> list[tuple]:
    """What a description of a scene can state: background kind and tone, and the sorted
    (shape, colour, size, grid row, grid column) of its valid objects."""
    rows, cols = grid_cells(scenes["object_x"], scenes["object_y"])
    keys = []
    for i in range(len(scenes["object_valid"])):
        objects = sorted(
            (
                int(scenes["object_shape"][i, j]),
                int(scenes["object_colour"][i, j]),
                int(scenes["object_size"][i, j]),
                int(rows[i, j]),
                int(cols[i, j]),
            )
            for j in np.flatnonzero(scenes["object_valid"][i])
        )
        bg = (int(scenes["background_kind"][i]), int(scenes["background_tone"][i]))
        keys.append((bg, tuple(objects)))
    return keys


def composed_ceiling(split: dict[str, Any]) -> float:
    """The ambiguity ceiling of composed R@1 on a split's gallery, in percent.

    A ranker that knows each target's content (background kind and tone; shape, colour, size
    and 3x3 grid cell of every object) still cannot tell apart gallery images of the same
    content; ranking them at random, its expected R@1 is

        ceiling = 100 / Q * sum_q 1 / |{g : content(g) = content(target_q)}|.

    Args:
      split: a :func:`generate_composed_split` (or :func:`generate_composed`) dict.

    Returns:
      the ceiling, in [0, 100].
    """
    keys = _content_keys({k: split[k] for k in SCENE_KEYS})
    counts: dict[tuple, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    targets = np.asarray(split["target_ids"])
    return float(100.0 * np.mean([1.0 / counts[keys[t]] for t in targets]))


def _composed(config: WorldConfig, n: int, rng: np.random.Generator) -> dict[str, Any]:
    references = sample_scenes(config, n, rng)
    targets = _select(references, np.arange(n))
    draws = _Draws(rng)
    texts, kinds = [], []
    for i in range(n):
        while True:  # a failed attempt (no unambiguous object, no room) is undone and redrawn
            backup = {k: v[i].copy() for k, v in targets.items()}
            result = _modify(targets, i, config, draws, rng.random((8, 2)).tolist())
            if result is not None:
                break
            for k, v in backup.items():
                targets[k][i] = v
        kinds.append(result[0])
        texts.append(result[1])
    scenes = {k: np.concatenate([references[k], targets[k]]) for k in references}
    captions = generate_captions(scenes, config, rng)
    return {
        "images": render_scenes(scenes, config),
        "image_ids": np.arange(2 * n, dtype=np.int32),
        "reference_ids": np.arange(n, dtype=np.int32),
        "target_ids": np.arange(n, 2 * n, dtype=np.int32),
        "modifications": texts,
        "modification_kind": np.asarray(kinds, np.int32),
        **captions,
        **scenes,
    }
