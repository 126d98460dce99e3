"""SynthWorld's vocabulary: shapes, colours, relations, the phrase tables and templates
of captions and modifications, and :func:`vocabulary_words`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the config module imports these tables
    from rest_jax.data.synthworld.world_config import WorldConfig


SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar", "star", "diamond")
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
SIZES = ("small", "medium", "large")
BACKGROUND_KINDS = ("plain", "gradient", "stripes", "checker", "noise")
BACKGROUND_TONES = ("light", "dark")
RELATIONS = ("left of", "right of", "above", "below", "next to", "inside", "around")
SPLITS = ("train", "validation", "test")
MODIFICATIONS = ("colour", "shape", "size", "remove", "add", "background")
CAPTION_TYPES = ("single", "relation", "list", "count")
MAX_MENTIONS = 3

# Base RGB (0-1) of each colour name, in COLOURS order.
COLOUR_RGB = (
    np.array(
        [
            [220, 35, 35],
            [245, 135, 20],
            [235, 215, 35],
            [40, 165, 60],
            [40, 200, 210],
            [40, 70, 225],
            [140, 50, 190],
            [245, 125, 180],
        ],
        dtype=np.float32,
    )
    / 255.0
)

# Words and phrases. The first entry of each tuple is the canonical word.
COLOUR_WORDS = {
    "red": ("red", "scarlet", "crimson"),
    "orange": ("orange", "amber", "tangerine"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "lime"),
    "cyan": ("cyan", "turquoise", "aqua"),
    "blue": ("blue", "azure", "cobalt"),
    "purple": ("purple", "violet", "lilac"),
    "pink": ("pink", "rose", "magenta"),
}
SHAPE_WORDS = {
    "circle": ("circle", "disc", "dot", "round shape"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge", "triangular shape"),
    "cross": ("cross", "plus sign", "plus"),
    "ring": ("ring", "donut", "hoop", "loop"),
    "bar": ("bar", "rectangle", "stick", "strip"),
    "star": ("star", "star shape", "starlet"),
    "diamond": ("diamond", "rhombus", "lozenge"),
}
GENERIC_NOUNS = ("shape", "object", "figure", "thing")
PLURAL_NOUNS = ("shapes", "objects", "figures", "items")
SIZE_WORDS = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium", "medium sized", "mid sized"),
    "large": ("large", "big", "huge"),
}
# Position phrases by grid cell (row, column) of the object's centre in a 3x3 grid.
POSITION_WORDS = {
    (0, 0): ("in the top left corner", "at the upper left", "in the top left"),
    (0, 1): ("at the top", "near the top", "in the upper middle"),
    (0, 2): ("in the top right corner", "at the upper right", "in the top right"),
    (1, 0): ("on the left", "at the left side", "near the left edge"),
    (1, 1): ("in the center", "in the middle", "at the centre"),
    (1, 2): ("on the right", "at the right side", "near the right edge"),
    (2, 0): ("in the bottom left corner", "at the lower left", "in the bottom left"),
    (2, 1): ("at the bottom", "near the bottom", "in the lower middle"),
    (2, 2): ("in the bottom right corner", "at the lower right", "in the bottom right"),
}
RELATION_WORDS = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "beneath"),
    "next to": ("next to", "beside", "near"),
    "inside": ("inside", "within", "enclosed by"),
    "around": ("around", "surrounding", "enclosing"),
}
BACKGROUND_KIND_WORDS = {
    "plain": ("plain", "solid", "uniform"),
    "gradient": ("gradient", "shaded", "fading"),
    "stripes": ("striped", "lined", "stripy"),
    "checker": ("checkered", "checkerboard", "chequered"),
    "noise": ("noisy", "grainy", "speckled"),
}
BACKGROUND_TONE_WORDS = {"light": ("light", "pale", "bright"), "dark": ("dark", "dim", "shadowy")}
BACKGROUND_NOUNS = ("background", "backdrop", "surface")
COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

SINGLE_TEMPLATES = (
    "{a}",
    "there is {a}",
    "a picture of {a}",
    "an image with {a}",
    "we can see {a}",
)
RELATION_TEMPLATES = (
    "{a} {rel} {b}",
    "there is {a} {rel} {b}",
    "{rel} {b} is {a}",
    "{a} placed {rel} {b}",
    "a picture of {a} {rel} {b}",
)
LIST_TEMPLATES_2 = (
    "{a} and {b}",
    "there are {a} and {b}",
    "{a} together with {b}",
    "an image showing {a} and {b}",
)
LIST_TEMPLATES_3 = (
    "{a}, {b} and {c}",
    "there are {a}, {b} and {c}",
    "a picture with {a}, {b} and {c}",
)
COUNT_TEMPLATES = (
    "{n} {things} including {a}",
    "a picture of {n} {things}, one of them {a}",
    "{n} {things} and one is {a}",
)
COUNT_ONE_TEMPLATES = ("only one {thing}: {a}", "a single {thing}, {a}", "{a} alone")
BACKGROUND_TEMPLATES = ("on {bg}", "against {bg}", "over {bg}")
MODIFICATION_TEMPLATES = {
    "colour": (
        "make {ref} {new}",
        "turn {ref} {new}",
        "change {ref} to {new}",
        "paint {ref} {new}",
    ),
    "shape": (
        "turn {ref} into a {new}",
        "replace {ref} with a {new}",
        "change {ref} into a {new}",
    ),
    "size": ("make {ref} {new}", "resize {ref} to {new}", "change {ref} to {new}"),
    "remove": ("remove {ref}", "delete {ref}", "take away {ref}"),
    "add": ("add {new}", "put in {new}", "insert {new}"),
    "background": (
        "change the background to {new}",
        "make the background {new}",
        "use a {new} background",
    ),
}

_CONTAINER_SHAPES = ("circle", "square", "ring")
_SPLIT_KEYS = {
    "train": 0,
    "validation": 1,
    "test": 2,
    "composed": 3,
    "composed_train": 4,
    "composed_validation": 5,
    "composed_test": 6,
}


def vocabulary_words(config: WorldConfig | None = None) -> list[str]:
    """Every word the caption and modification grammar can emit, sorted.

    Built from the phrase tables and templates, with text normalised as the tokenizer does, so
    the set does not depend on random draws. ``config`` is accepted for symmetry; the grammar is
    the same for every config (unused names stay in the vocabulary).
    """
    del config
    texts: list[str] = []
    for table in (
        COLOUR_WORDS,
        SHAPE_WORDS,
        SIZE_WORDS,
        POSITION_WORDS,
        RELATION_WORDS,
        BACKGROUND_KIND_WORDS,
        BACKGROUND_TONE_WORDS,
    ):
        for phrases in table.values():
            texts.extend(phrases)
    for group in (
        GENERIC_NOUNS,
        PLURAL_NOUNS,
        BACKGROUND_NOUNS,
        COUNT_WORDS,
        SINGLE_TEMPLATES,
        RELATION_TEMPLATES,
        LIST_TEMPLATES_2,
        LIST_TEMPLATES_3,
        COUNT_TEMPLATES,
        COUNT_ONE_TEMPLATES,
        BACKGROUND_TEMPLATES,
        SHAPES,
        COLOURS,
        SIZES,
        BACKGROUND_TONES,
    ):
        texts.extend(group)
    for group in MODIFICATION_TEMPLATES.values():
        texts.extend(group)
    words = set()
    for text in texts:
        for word in text.replace(",", " ").replace(":", " ").split():
            if not (word.startswith("{") and word.endswith("}")):
                words.add(word.lower())
    return sorted(words)
