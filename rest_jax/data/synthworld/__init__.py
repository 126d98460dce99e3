"""SynthWorld: a procedurally generated image-caption world that needs no download.

docs/method.md section 8.3. Each image is a small scene: a few named shapes
(circle, square, triangle, cross, ring, bar, star, diamond) with a colour, a size, a position and
simple relations (left of / right of / above / below / next to / inside / around), tiny unnamed
distractor shapes, and a textured background (plain, gradient, stripes, checker, noise) that is
light or dark. Each image gets 5 captions from varied templates with synonyms; every caption is
true of its image (``caption_consistency`` checks this independently of the generator).

What makes it hard (the knobs live in ``WorldConfig``):
  * captions mention only a subset of the objects (1 to 3), or only as a count, so a caption
    often describes several images truthfully (``p_omit_colour`` and ``p_generic_noun``, 0 by
    default, make them vaguer). ``oracle_recall_at_1`` measures the ceiling this leaves: with
    the defaults, on the 1000-image test split (seed 0), t2i R@1 <= 94.5 and
    i2t R@1 <= 100.0 (99.98);
  * objects are small (a 32 px image holds a "small" star about 8 px wide), so shape and
    background texture are fine detail that corruptions destroy; neighbouring colours
    (red/orange/pink, blue/cyan/purple) differ little;
  * nuisance variation that captions never mention: rotation, colour jitter, background tint,
    stripe orientation and period, texture noise, sensor noise.

Data layout. A split is a dict of numpy arrays and lists. Images are ``uint8 [N, H, W, 3]``;
captions are image-major (captions ``5i .. 5i+4`` describe image ``i``). Objects live in
``M = max_objects + max_distractors`` slots per image with a validity mask; slot order is the
drawing order, named objects first. Positions are in image-fraction units, ``x`` to the right
and ``y`` downwards, both in [0, 1].

Composed queries (``generate_composed``): a reference scene, a modification text such as
"make the red circle blue", and the target scene obtained by applying that modification to the
reference (same background, noise and other objects); ``generate_composed_split`` draws the
train / validation / test triples of the composed task, ``composed_ceiling`` its ambiguity
ceiling.

Modules: ``words`` (vocabulary, phrase tables, templates), ``world_config`` (the knobs and
per-split random streams), ``scenes``, ``render``, ``captions``, ``splits``
(:func:`generate_split`), ``truth`` (caption checking, the ambiguity ceiling) and
``composed``. Every public name is importable from ``rest_jax.data.synthworld``.
"""

from __future__ import annotations

from rest_jax.data.synthworld.captions import CAPTION_KEYS, generate_captions
from rest_jax.data.synthworld.composed import (
    COMPOSED_SPLIT_SIZES,
    composed_ceiling,
    generate_composed,
    generate_composed_split,
)
from rest_jax.data.synthworld.render import hashed_uniform, render_scenes, shape_sdf
from rest_jax.data.synthworld.scenes import SCENE_KEYS, grid_cells, relation_table, sample_scenes
from rest_jax.data.synthworld.splits import generate_split
from rest_jax.data.synthworld.truth import caption_consistency, oracle_recall_at_1
from rest_jax.data.synthworld.words import (
    BACKGROUND_KIND_WORDS,
    BACKGROUND_KINDS,
    BACKGROUND_NOUNS,
    BACKGROUND_TEMPLATES,
    BACKGROUND_TONE_WORDS,
    BACKGROUND_TONES,
    CAPTION_TYPES,
    COLOUR_RGB,
    COLOUR_WORDS,
    COLOURS,
    COUNT_ONE_TEMPLATES,
    COUNT_TEMPLATES,
    COUNT_WORDS,
    GENERIC_NOUNS,
    LIST_TEMPLATES_2,
    LIST_TEMPLATES_3,
    MAX_MENTIONS,
    MODIFICATION_TEMPLATES,
    MODIFICATIONS,
    PLURAL_NOUNS,
    POSITION_WORDS,
    RELATION_TEMPLATES,
    RELATION_WORDS,
    RELATIONS,
    SHAPE_WORDS,
    SHAPES,
    SINGLE_TEMPLATES,
    SIZE_WORDS,
    SIZES,
    SPLITS,
    vocabulary_words,
)
from rest_jax.data.synthworld.world_config import WorldConfig, split_rng

__all__ = [
    "BACKGROUND_KINDS",
    "BACKGROUND_KIND_WORDS",
    "BACKGROUND_NOUNS",
    "BACKGROUND_TEMPLATES",
    "BACKGROUND_TONES",
    "BACKGROUND_TONE_WORDS",
    "CAPTION_KEYS",
    "COMPOSED_SPLIT_SIZES",
    "CAPTION_TYPES",
    "COLOURS",
    "COLOUR_RGB",
    "COLOUR_WORDS",
    "COUNT_ONE_TEMPLATES",
    "COUNT_TEMPLATES",
    "COUNT_WORDS",
    "GENERIC_NOUNS",
    "LIST_TEMPLATES_2",
    "LIST_TEMPLATES_3",
    "MAX_MENTIONS",
    "MODIFICATIONS",
    "MODIFICATION_TEMPLATES",
    "PLURAL_NOUNS",
    "POSITION_WORDS",
    "RELATIONS",
    "RELATION_TEMPLATES",
    "RELATION_WORDS",
    "SCENE_KEYS",
    "SHAPES",
    "SHAPE_WORDS",
    "SINGLE_TEMPLATES",
    "SIZES",
    "SIZE_WORDS",
    "SPLITS",
    "WorldConfig",
    "caption_consistency",
    "composed_ceiling",
    "generate_captions",
    "generate_composed",
    "generate_composed_split",
    "generate_split",
    "grid_cells",
    "hashed_uniform",
    "oracle_recall_at_1",
    "relation_table",
    "render_scenes",
    "sample_scenes",
    "shape_sdf",
    "split_rng",
    "vocabulary_words",
]
