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
reference (same background, noise and other objects).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

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
_SPLIT_KEYS = {"train": 0, "validation": 1, "test": 2, "composed": 3}


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Difficulty knobs of the synthetic world (defaults are the benchmark's).

    Attributes:
      image_size: side of the square RGB images in pixels (32; 64 also works).
      n_train, n_validation, n_test: images per split (10,000 / 1,000 / 1,000; the test split is
        shaped like Flickr30k's 1k test: 1000 images, 5000 captions).
      captions_per_image: captions per image (5, as COCO and Flickr).
      shapes, colours: the shape and colour names in use (subsets of SHAPES and COLOURS make an
        easier world).
      min_objects, max_objects: range of named objects per image (2 to 3).
      max_distractors: tiny unnamed shapes per image, uniform in 0..max_distractors (1). Captions
        never name them, but counts include them.
      object_radius: radius of small / medium / large objects, fraction of the image side
        (0.12, 0.17, 0.23: a small object is about 8 px wide in a 32 px image).
      distractor_radius: radius of distractors, fraction of the image side.
      radius_jitter: relative uniform jitter of every radius (0.1 = +-10%).
      max_rotation_deg: objects are rotated uniformly in +-max_rotation_deg (15).
      colour_jitter: relative brightness jitter of object colours; each channel also moves by up
        to half of it (0.12).
      p_inside: probability that an image with >= 2 named objects nests a small object inside a
        large circle, square or ring (0.15).
      background_contrast: amplitude of the background pattern, fraction of full scale (0.12).
      pixel_noise: standard deviation of the sensor noise, fraction of full scale (0.02).
      caption_type_weights: relative weights of the caption types single / relation / list /
        count (0.1, 0.35, 0.45, 0.1). Single-object captions are the most ambiguous.
      p_mention_size: probability that a noun phrase names the size (0.8).
      p_omit_colour: probability that a noun phrase leaves the colour out (0).
      p_generic_noun: probability that a coloured noun phrase says "shape"/"object" instead of
        the shape name (0).
      p_mention_position: probability that a noun phrase of a single, list or count caption
        gives the object's grid position (1).
      p_mention_background: probability that a caption describes the background (0.8).

    The defaults are tuned so that a source model trained for ~2 CPU minutes
    (``rest_jax.training.SourceModelConfig``) retrieves well on clean data and loses much of it
    under severe corruptions; the ambiguity knobs (``p_omit_colour``, ``p_generic_noun``,
    smaller objects, more distractors) make harder worlds.
      p_synonym: probability of a synonym instead of the canonical word (0.3).
      relation_margin: "left of" etc. need a centre offset of at least this (0.1).
      near_distance: "next to" needs centres closer than this (0.4).
    """

    image_size: int = 32
    n_train: int = 10_000
    n_validation: int = 1_000
    n_test: int = 1_000
    captions_per_image: int = 5
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = COLOURS
    min_objects: int = 2
    max_objects: int = 3
    max_distractors: int = 1
    object_radius: tuple[float, float, float] = (0.12, 0.17, 0.23)
    distractor_radius: float = 0.065
    radius_jitter: float = 0.1
    max_rotation_deg: float = 15.0
    colour_jitter: float = 0.12
    p_inside: float = 0.15
    background_contrast: float = 0.12
    pixel_noise: float = 0.02
    caption_type_weights: tuple[float, float, float, float] = (0.1, 0.35, 0.45, 0.1)
    p_mention_size: float = 0.8
    p_omit_colour: float = 0.0
    p_generic_noun: float = 0.0
    p_mention_position: float = 1.0
    p_mention_background: float = 0.8
    p_synonym: float = 0.3
    relation_margin: float = 0.1
    near_distance: float = 0.4

    def __post_init__(self):
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        for name in ("n_train", "n_validation", "n_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.captions_per_image < 1:
            raise ValueError(f"captions_per_image must be >= 1, got {self.captions_per_image}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if self.max_distractors < 0:
            raise ValueError(f"max_distractors must be >= 0, got {self.max_distractors}")
        if self.max_objects + self.max_distractors >= len(COUNT_WORDS):
            raise ValueError(
                f"max_objects + max_distractors must be < {len(COUNT_WORDS)} (count words)"
            )
        unknown = set(self.shapes) - set(SHAPES)
        if unknown or not self.shapes:
            raise ValueError(f"shapes must be a non-empty subset of {SHAPES}, got {self.shapes}")
        unknown = set(self.colours) - set(COLOURS)
        if unknown or len(self.colours) < 2:
            raise ValueError(f"colours must be a subset of {COLOURS} with >= 2 names")
        if len(self.object_radius) != 3:
            raise ValueError("object_radius needs 3 entries (small, medium, large)")
        if len(self.caption_type_weights) != len(CAPTION_TYPES):
            raise ValueError(f"caption_type_weights needs {len(CAPTION_TYPES)} entries")
        for name in (
            "p_inside",
            "p_mention_size",
            "p_omit_colour",
            "p_generic_noun",
            "p_mention_position",
            "p_mention_background",
            "p_synonym",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    @property
    def max_slots(self) -> int:
        """Object slots per image: named objects then distractors."""
        return self.max_objects + self.max_distractors

    def split_size(self, split: str) -> int:
        """Number of images of a split."""
        return {"train": self.n_train, "validation": self.n_validation, "test": self.n_test}[
            _check_split(split)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return split


def split_rng(seed: int, split: str) -> np.random.Generator:
    """Independent generator per (seed, split): SeedSequence([seed, split key])."""
    if split not in _SPLIT_KEYS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(_SPLIT_KEYS)}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_KEYS[split]]))


# ----------------------------------------------------------------------------------------------
# Scene sampling.


def grid_cells(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column (0, 1, 2) of positions in a 3x3 grid: floor(3 * coordinate)."""
    row = np.clip(np.floor(np.asarray(y) * 3.0), 0, 2).astype(np.int32)
    col = np.clip(np.floor(np.asarray(x) * 3.0), 0, 2).astype(np.int32)
    return row, col


def relation_table(scenes: dict[str, np.ndarray], config: WorldConfig) -> np.ndarray:
    """Truth of every relation between every ordered pair of slots.

    a "left of" b: x_a < x_b - margin; "right of", "above" (y_a < y_b - margin), "below"
    likewise; "next to": |c_a - c_b| < near_distance and neither encloses the other; "inside":
    a is nested in b; "around": b is nested in a. Relations of a slot with itself are false.

    Returns:
      bool [N, len(RELATIONS), M, M]: entry [n, r, a, b] says "a <r> b" in image n.
    """
    x, y = scenes["object_x"], scenes["object_y"]
    container = scenes["object_container"]
    m = x.shape[1]
    dx = x[:, :, None] - x[:, None, :]
    dy = y[:, :, None] - y[:, None, :]
    slots = np.arange(m)
    inside = container[:, :, None] == slots[None, None, :]
    around = np.swapaxes(inside, 1, 2)
    nested = inside | around
    margin = config.relation_margin
    table = np.stack(
        [
            dx < -margin,
            dx > margin,
            dy < -margin,
            dy > margin,
            (np.hypot(dx, dy) < config.near_distance) & ~nested,
            inside,
            around,
        ],
        axis=1,
    )
    valid = scenes["object_valid"]
    pair_valid = valid[:, :, None] & valid[:, None, :] & (slots[:, None] != slots[None, :])
    return table & pair_valid[:, None]


def _conflicts(x, y, radius, valid, container) -> np.ndarray:
    """bool [N, M]: slot j overlaps an earlier valid slot (nested pairs excepted)."""
    m = x.shape[1]
    dist = np.hypot(x[:, :, None] - x[:, None, :], y[:, :, None] - y[:, None, :])
    limit = (radius[:, :, None] + radius[:, None, :]) * 1.05 + 0.02
    slots = np.arange(m)
    earlier = slots[:, None] < slots[None, :]  # [i, j]: i drawn before j
    nested = (container[:, :, None] == slots[None, None, :]) | (
        container[:, None, :] == slots[None, :, None]
    )
    clash = (dist < limit) & earlier[None] & valid[:, :, None] & valid[:, None, :] & ~nested
    return clash.any(axis=1)


def _place(rng, radius, size, valid, container, named, object_radius, attempts=32):
    """Places objects slot by slot, each clear of the slots placed before it.

    For each slot, ``attempts`` candidate centres are drawn per image and the first that clears
    every earlier object (distance >= 1.05 (r_i + r_j) + 0.02) is kept. A named object that
    finds no room shrinks one size class and tries again; an object that still finds none is
    dropped. Nested children sit at their container's centre.

    Returns:
      x, y float32 [n, M]; and the updated radius, size, valid.
    """
    n, m = radius.shape
    radius, size, valid = radius.copy(), size.copy(), valid.copy()
    x, y = np.zeros((n, m)), np.zeros((n, m))
    placed = np.zeros((n, m), bool)
    object_radius = np.asarray(object_radius)
    for j in range(m):
        child = container[:, j] >= 0
        rows = np.nonzero(valid[:, j] & child)[0]
        x[rows, j] = x[rows, container[rows, j]]
        y[rows, j] = y[rows, container[rows, j]]
        placed[rows, j] = True
        todo = valid[:, j] & ~child
        for shrink in range(3):
            rows = np.nonzero(todo)[0]
            if not len(rows):
                break
            r = radius[rows, j][:, None]
            lo, hi = r + 0.02, 1.0 - r - 0.02
            cx = lo + (hi - lo) * rng.random((len(rows), attempts))
            cy = lo + (hi - lo) * rng.random((len(rows), attempts))
            dist = np.hypot(cx[:, :, None] - x[rows, None, :j], cy[:, :, None] - y[rows, None, :j])
            limit = (r[:, :, None] + radius[rows, None, :j]) * 1.05 + 0.02
            clear = ~((dist < limit) & placed[rows, None, :j]).any(axis=-1)
            found = clear.any(axis=1)
            pick = np.argmax(clear, axis=1)
            hit = rows[found]
            x[hit, j] = cx[found, pick[found]]
            y[hit, j] = cy[found, pick[found]]
            placed[hit, j] = True
            todo[hit] = False
            smaller = rows[~found & named[rows, j] & (size[rows, j] > 0)]
            if shrink < 2 and len(smaller):
                ratio = object_radius[size[smaller, j] - 1] / object_radius[size[smaller, j]]
                radius[smaller, j] *= ratio
                size[smaller, j] -= 1
        valid[todo, j] = False
    return x.astype(np.float32), y.astype(np.float32), radius, size, valid


def sample_scenes(config: WorldConfig, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draws n scenes (object and background attributes; no pixels).

    Returns:
      dict with ``object_*`` arrays [n, M] (valid, mentionable, shape, colour, size, x, y, radius,
      angle, container: slot index of the enclosing object or -1), ``object_rgb`` [n, M, 3],
      ``n_objects`` [n], and ``background_*`` arrays (kind, tone, rgb [n, 3], angle, period) plus
      ``noise_seed`` [n] (uint32, seeds the texture and sensor noise of that image).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    k, d = config.max_objects, config.max_distractors
    m = k + d
    shape_ids = np.array([SHAPES.index(s) for s in config.shapes])
    colour_ids = np.array([COLOURS.index(c) for c in config.colours])

    n_named = rng.integers(config.min_objects, k + 1, n)
    n_distractors = rng.integers(0, d + 1, n)
    slots = np.arange(m)
    named = slots[None, :] < k
    valid = np.where(
        named, slots[None] < n_named[:, None], slots[None] - k < n_distractors[:, None]
    )
    shape = shape_ids[rng.integers(0, len(shape_ids), (n, m))]
    colour = colour_ids[rng.integers(0, len(colour_ids), (n, m))]
    size = np.where(named, rng.integers(0, 3, (n, m)), 0)
    base_radius = np.where(named, np.asarray(config.object_radius)[size], config.distractor_radius)
    container = np.full((n, m), -1, np.int32)

    containers = np.array([SHAPES.index(s) for s in _CONTAINER_SHAPES if s in config.shapes])
    if len(containers) and k >= 2:
        nest = (n_named >= 2) & (rng.random(n) < config.p_inside)
        idx = np.nonzero(nest)[0]
        shape[idx, 0] = containers[rng.integers(0, len(containers), len(idx))]
        size[idx, 0], size[idx, 1] = 2, 0
        base_radius[idx, 0] = config.object_radius[2] * 1.15
        base_radius[idx, 1] = config.object_radius[0]
        # The child's colour differs from its container's so that it stays visible.
        pos = np.searchsorted(colour_ids, colour[idx, 0])
        shift = rng.integers(1, len(colour_ids), len(idx))
        colour[idx, 1] = colour_ids[(pos + shift) % len(colour_ids)]
        container[idx, 1] = 0

    radius = base_radius * (1.0 + config.radius_jitter * rng.uniform(-1, 1, (n, m)))
    x, y, radius, size, valid = _place(
        rng, radius, size, valid, container, named & valid, config.object_radius
    )
    angle = np.deg2rad(config.max_rotation_deg) * rng.uniform(-1, 1, (n, m))
    brightness = 1.0 + config.colour_jitter * rng.uniform(-1, 1, (n, m, 1))
    tint = 0.5 * config.colour_jitter * rng.uniform(-1, 1, (n, m, 3))
    rgb = np.clip(COLOUR_RGB[colour] * brightness + tint, 0.0, 1.0)

    tone = rng.integers(0, len(BACKGROUND_TONES), n)
    level = np.where(tone == 0, rng.uniform(0.72, 0.9, n), rng.uniform(0.1, 0.28, n))
    bg_rgb = np.clip(level[:, None] + rng.uniform(-0.06, 0.06, (n, 3)), 0.0, 1.0)
    return {
        "n_objects": valid.sum(axis=1).astype(np.int32),
        "object_valid": valid,
        "object_mentionable": valid & named,
        "object_shape": shape.astype(np.int32),
        "object_colour": colour.astype(np.int32),
        "object_size": size.astype(np.int32),
        "object_x": x,
        "object_y": y,
        "object_radius": radius.astype(np.float32),
        "object_angle": angle.astype(np.float32),
        "object_rgb": rgb.astype(np.float32),
        "object_container": container,
        "background_kind": rng.integers(0, len(BACKGROUND_KINDS), n).astype(np.int32),
        "background_tone": tone.astype(np.int32),
        "background_rgb": bg_rgb.astype(np.float32),
        "background_angle": (rng.integers(0, 4, n) * (np.pi / 4)).astype(np.float32),
        "background_period": rng.uniform(0.15, 0.3, n).astype(np.float32),
        "noise_seed": rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32),
    }


SCENE_KEYS = (
    "n_objects",
    "object_valid",
    "object_mentionable",
    "object_shape",
    "object_colour",
    "object_size",
    "object_x",
    "object_y",
    "object_radius",
    "object_angle",
    "object_rgb",
    "object_container",
    "background_kind",
    "background_tone",
    "background_rgb",
    "background_angle",
    "background_period",
    "noise_seed",
)


# ----------------------------------------------------------------------------------------------
# Rendering.


def _fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (uint32 in, well-mixed uint32 out)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> np.uint32(13))
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


def hashed_uniform(seeds: np.ndarray, shape: tuple[int, ...], stream: int) -> np.ndarray:
    """Counter-based uniforms in [0, 1): float32 [len(seeds), *shape].

    u[i, k] = fmix32(fmix32(seed_i xor stream * 0x9E3779B9) + k * 0x9E3779B1) / 2^32. Each image's
    noise depends on its own seed only, so a composed target re-renders its reference's noise.
    """
    count = int(np.prod(shape))
    key = _fmix32(np.asarray(seeds, np.uint32) ^ np.uint32((stream * 0x9E3779B9) & 0xFFFFFFFF))
    counter = np.arange(count, dtype=np.uint32) * np.uint32(0x9E3779B1)
    bits = _fmix32(key[:, None] + counter[None, :])
    return (bits >> np.uint32(8)).astype(np.float32).reshape(len(key), *shape) / np.float32(2**24)


def _segment_sdf(px, py, ax, ay, bx, by):
    """Distance to segment AB, negative on the side of AB where the origin lies."""
    ex, ey = bx - ax, by - ay
    wx, wy = px - ax, py - ay
    t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    dist = np.hypot(wx - ex * t, wy - ey * t)
    origin_side = np.sign(ex * (0.0 - ay) - ey * (0.0 - ax))
    return np.where(np.sign(ex * wy - ey * wx) == origin_side, -dist, dist)


def _box_sdf(u, v, half_width, half_height):
    qx, qy = np.abs(u) - half_width, np.abs(v) - half_height
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _star_sdf(u, v, points: int, outer: float, inner: float):
    """k-fold mirror-symmetric star (inner = outer * cos(pi / k) gives the regular polygon).

    The point is folded into the wedge [0, pi/k] around the first vertex (pointing up), where the
    nearest outline piece is the edge from the outer vertex to the next inner vertex.
    """
    half = np.pi / points
    theta = np.arctan2(u, v)  # 0 = up
    theta = np.abs(np.mod(theta + half, 2 * half) - half)
    rho = np.hypot(u, v)
    px, py = rho * np.cos(theta), rho * np.sin(theta)
    return _segment_sdf(px, py, outer, 0.0, inner * np.cos(half), inner * np.sin(half))


def shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of a shape of unit radius, at (u, v) with v up.

    Shapes: circle (radius 0.95), ring (0.48-1.02), square (half side 0.82), bar (1.05 x 0.36),
    diamond (rhombus 0.78 x 1.15), cross (arms 1.0 long, 0.3 half-thick), triangle (circumradius
    1.15, pointing up), star (5 points, radii 1.15 and 0.48).
    """
    if shape == "circle":
        return np.hypot(u, v) - 0.95
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.75) - 0.27
    if shape == "square":
        return _box_sdf(u, v, 0.82, 0.82)
    if shape == "bar":
        return _box_sdf(u, v, 1.05, 0.36)
    if shape == "diamond":
        return _segment_sdf(np.abs(u), np.abs(v), 0.78, 0.0, 0.0, 1.15)
    if shape == "cross":
        # Fold to |u| >= |v|: there the horizontal arm is the nearer one.
        au, av = np.abs(u), np.abs(v)
        return _box_sdf(np.maximum(au, av), np.minimum(au, av), 1.0, 0.3)
    if shape == "triangle":
        return _star_sdf(u, v, 3, 1.15, 1.15 * np.cos(np.pi / 3))
    if shape == "star":
        return _star_sdf(u, v, 5, 1.15, 0.48)
    raise ValueError(f"unknown shape {shape!r}")


def _bilinear(coarse: np.ndarray, size: int) -> np.ndarray:
    """Upsamples [n, g, g] grids to [n, size, size] by bilinear interpolation."""
    g = coarse.shape[-1]
    pos = (np.arange(size) + 0.5) / size * (g - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, g - 2)
    f = (pos - i0).astype(np.float32)
    rows = coarse[:, i0] * (1 - f)[None, :, None] + coarse[:, i0 + 1] * f[None, :, None]
    return rows[:, :, i0] * (1 - f) + rows[:, :, i0 + 1] * f


def _background_pattern(scenes, idx, grid) -> np.ndarray:
    """Background pattern in [-1, 1], float32 [len(idx), S, S]."""
    gx, gy = grid
    kind = scenes["background_kind"][idx][:, None, None]
    angle = scenes["background_angle"][idx][:, None, None]
    period = scenes["background_period"][idx][:, None, None]
    along = np.cos(angle) * (gx - 0.5) + np.sin(angle) * (gy - 0.5)
    pattern = np.zeros(along.shape, np.float32)
    pattern = np.where(kind == 1, np.clip(2.0 * along, -1, 1), pattern)  # gradient
    pattern = np.where(kind == 2, np.tanh(3.0 * np.sin(2 * np.pi * along / period)), pattern)
    checks = np.sin(2 * np.pi * gx / period) * np.sin(2 * np.pi * gy / period)
    pattern = np.where(kind == 3, np.tanh(6.0 * checks), pattern)  # checker
    noisy = np.nonzero(kind[:, 0, 0] == 4)[0]
    if len(noisy):  # smooth value noise on a 6x6 lattice
        coarse = 2.0 * hashed_uniform(scenes["noise_seed"][idx[noisy]], (6, 6), stream=0) - 1.0
        pattern[noisy] = _bilinear(coarse, gx.shape[0])
    return pattern.astype(np.float32)


def render_scenes(
    scenes: dict[str, np.ndarray], config: WorldConfig, chunk_size: int = 1024
) -> np.ndarray:
    """Renders scenes to uint8 images [N, S, S, 3] (vectorised over images, chunked).

    Pixel value = background_rgb + background_contrast * pattern, then each valid object in slot
    order is composited with coverage alpha = clip(0.5 - d, 0, 1), d the signed distance to its
    outline in pixels (one-pixel anti-aliasing), then sensor noise (triangular, standard
    deviation pixel_noise), then rounding to uint8.
    """
    n = len(scenes["n_objects"])
    s = config.image_size
    centres = (np.arange(s, dtype=np.float32) + 0.5) / s
    grid = np.meshgrid(centres, centres, indexing="xy")
    out = np.empty((n, s, s, 3), np.uint8)
    for start in range(0, n, chunk_size):
        idx = np.arange(start, min(n, start + chunk_size))
        pattern = _background_pattern(scenes, idx, grid)
        img = scenes["background_rgb"][idx][:, None, None, :] + (
            np.float32(config.background_contrast) * pattern[..., None]
        )
        for slot in range(scenes["object_valid"].shape[1]):
            for shape_id, shape in enumerate(SHAPES):
                sel = np.nonzero(
                    scenes["object_valid"][idx, slot]
                    & (scenes["object_shape"][idx, slot] == shape_id)
                )[0]
                if not len(sel):
                    continue
                rows = idx[sel]
                r = scenes["object_radius"][rows, slot][:, None, None]
                dx = (grid[0][None] - scenes["object_x"][rows, slot][:, None, None]) / r
                dy = (scenes["object_y"][rows, slot][:, None, None] - grid[1][None]) / r
                a = scenes["object_angle"][rows, slot][:, None, None]
                cos, sin = np.cos(a), np.sin(a)
                u, v = cos * dx + sin * dy, cos * dy - sin * dx
                alpha = np.clip(0.5 - shape_sdf(shape, u, v) * (r * s), 0.0, 1.0)[..., None]
                rgb = scenes["object_rgb"][rows, slot][:, None, None, :]
                img[sel] += alpha * (rgb - img[sel])
        if config.pixel_noise > 0:
            # U(0,1) + U(0,1) - 1 has standard deviation 1/sqrt(6).
            pair = hashed_uniform(scenes["noise_seed"][idx], (2, s, s, 3), stream=1)
            img += np.float32(config.pixel_noise * np.sqrt(6.0)) * (pair[:, 0] + pair[:, 1] - 1)
        out[idx] = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------------------------
# Captions.


class _Draws:
    """Sequential uniform draws, fetched from the generator in blocks (fast scalar draws)."""

    def __init__(self, rng: np.random.Generator, size: int = 512):
        self._rng = rng
        self._size = size
        self._values: list[float] = []
        self._pos = 0

    def uniform(self) -> float:
        if self._pos >= len(self._values):
            self._values = self._rng.random(self._size).tolist()
            self._pos = 0
        self._pos += 1
        return self._values[self._pos - 1]

    def chance(self, p: float) -> bool:
        return self.uniform() < p

    def index(self, n: int) -> int:
        return min(int(self.uniform() * n), n - 1)

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.index(len(options))]

    def weighted(self, weights: Sequence[float]) -> int:
        total, target = 0.0, self.uniform() * sum(weights)
        for i, w in enumerate(weights):
            total += w
            if target < total:
                return i
        return len(weights) - 1

    def sample(self, items: Sequence[Any], k: int) -> list[Any]:
        pool = list(items)
        return [pool.pop(self.index(len(pool))) for _ in range(k)]


def _word(table: dict[str, tuple[str, ...]], key: str, draws: _Draws, p_synonym: float) -> str:
    words = table[key]
    if len(words) > 1 and draws.chance(p_synonym):
        return words[1 + draws.index(len(words) - 1)]
    return words[0]


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


class _Mention:
    """What a noun phrase says about one object (used by caption_consistency)."""

    __slots__ = ("slot", "shape", "colour", "size", "position")

    def __init__(self, slot, shape, colour, size, position):
        self.slot, self.shape, self.colour = slot, shape, colour
        self.size, self.position = size, position


def _noun_phrase(obj: dict[str, Any], config: WorldConfig, draws: _Draws, position_ok: bool):
    """'a big red circle in the top left corner' and what it states."""
    p = config.p_synonym
    say_colour = not draws.chance(config.p_omit_colour)
    say_size = draws.chance(config.p_mention_size)
    say_shape = not (say_colour and draws.chance(config.p_generic_noun))
    say_position = position_ok and draws.chance(config.p_mention_position)
    words = []
    if say_size:
        words.append(_word(SIZE_WORDS, SIZES[obj["size"]], draws, p))
    if say_colour:
        words.append(_word(COLOUR_WORDS, COLOURS[obj["colour"]], draws, p))
    words.append(
        _word(SHAPE_WORDS, SHAPES[obj["shape"]], draws, p)
        if say_shape
        else draws.choice(GENERIC_NOUNS)
    )
    phrase = _with_article(" ".join(words))
    if say_position:
        phrase += " " + draws.choice(POSITION_WORDS[(obj["row"], obj["col"])])
    mention = _Mention(obj["slot"], say_shape, say_colour, say_size, say_position)
    return phrase, mention


def _background_phrase(kind: int, tone: int, config: WorldConfig, draws: _Draws):
    say_tone = draws.chance(0.5)
    say_kind = not say_tone or draws.chance(0.6)
    words = []
    if say_tone:
        words.append(_word(BACKGROUND_TONE_WORDS, BACKGROUND_TONES[tone], draws, config.p_synonym))
    if say_kind:
        words.append(_word(BACKGROUND_KIND_WORDS, BACKGROUND_KINDS[kind], draws, config.p_synonym))
    words.append(draws.choice(BACKGROUND_NOUNS))
    phrase = draws.choice(BACKGROUND_TEMPLATES).format(bg=_with_article(" ".join(words)))
    return phrase, say_kind, say_tone


def _one_caption(scene: dict[str, Any], config: WorldConfig, draws: _Draws):
    """One caption of one scene and its meaning record."""
    named = scene["named"]
    kind = CAPTION_TYPES[draws.weighted(config.caption_type_weights)]
    if kind in ("relation", "list") and len(named) < 2:
        kind = "single"
    relation, count, mentions = -1, -1, []
    if kind == "single":
        obj = draws.choice(named)
        a, men = _noun_phrase(obj, config, draws, position_ok=True)
        text, mentions = draws.choice(SINGLE_TEMPLATES).format(a=a), [men]
    elif kind == "relation":
        first, second = draws.sample(named, 2)
        options = [
            r for r in range(len(RELATIONS)) if scene["relations"][r][first["slot"]][second["slot"]]
        ]
        a, men_a = _noun_phrase(first, config, draws, position_ok=False)
        b, men_b = _noun_phrase(second, config, draws, position_ok=False)
        mentions = [men_a, men_b]
        if options:
            relation = draws.choice(options)
            rel = _word(RELATION_WORDS, RELATIONS[relation], draws, config.p_synonym)
            text = draws.choice(RELATION_TEMPLATES).format(a=a, b=b, rel=rel)
        else:  # only with unusual relation_margin / near_distance settings
            text = draws.choice(LIST_TEMPLATES_2).format(a=a, b=b)
    elif kind == "list":
        k = 3 if len(named) >= 3 and draws.chance(0.5) else 2
        phrases = [_noun_phrase(o, config, draws, True) for o in draws.sample(named, k)]
        template = draws.choice(LIST_TEMPLATES_3 if k == 3 else LIST_TEMPLATES_2)
        text = template.format(**{key: ph for key, (ph, _) in zip("abc", phrases)})
        mentions = [men for _, men in phrases]
    else:
        count = scene["n_objects"]
        obj = draws.choice(named)
        a, men = _noun_phrase(obj, config, draws, position_ok=True)
        if count == 1:
            template = draws.choice(COUNT_ONE_TEMPLATES)
            text = template.format(a=a, thing=draws.choice(GENERIC_NOUNS))
            mentions = [men]
        else:
            template = draws.choice(COUNT_TEMPLATES)
            text = template.format(n=COUNT_WORDS[count], things=draws.choice(PLURAL_NOUNS), a=a)
            mentions = [men] if "{a}" in template else []
    say_kind = say_tone = False
    if draws.chance(config.p_mention_background):
        bg, say_kind, say_tone = _background_phrase(
            scene["background_kind"], scene["background_tone"], config, draws
        )
        text = f"{bg}, {text}" if draws.chance(0.3) else f"{text} {bg}"
    if draws.chance(0.5):
        text = text[0].upper() + text[1:]
    if draws.chance(0.3):
        text += "."
    return text, (mentions, relation, count, say_kind, say_tone)


def _scene_view(scenes, rel_table, i: int) -> dict[str, Any]:
    """Plain-Python view of image i for the caption loop."""
    rows, cols = grid_cells(scenes["object_x"][i], scenes["object_y"][i])
    named = [
        {
            "slot": j,
            "shape": int(scenes["object_shape"][i, j]),
            "colour": int(scenes["object_colour"][i, j]),
            "size": int(scenes["object_size"][i, j]),
            "row": int(rows[j]),
            "col": int(cols[j]),
        }
        for j in np.nonzero(scenes["object_mentionable"][i])[0].tolist()
    ]
    return {
        "named": named,
        "relations": rel_table[i].tolist(),
        "n_objects": int(scenes["n_objects"][i]),
        "background_kind": int(scenes["background_kind"][i]),
        "background_tone": int(scenes["background_tone"][i]),
    }


def generate_captions(
    scenes: dict[str, np.ndarray], config: WorldConfig, rng: np.random.Generator
) -> dict[str, Any]:
    """Writes ``config.captions_per_image`` distinct, true captions per scene.

    Returns:
      dict: ``captions`` list[str] (image-major), ``caption_image_ids`` int32 [C], and the
      meaning of each caption: ``caption_objects`` int32 [C, 3] (slots mentioned, -1 padded),
      ``caption_says_shape/colour/size/position`` bool [C, 3], ``caption_relation`` int32 [C]
      (index in RELATIONS between mentions 0 and 1, or -1), ``caption_count`` int32 [C] (or -1),
      ``caption_says_background_kind`` / ``caption_says_background_tone`` bool [C].
    """
    n = len(scenes["n_objects"])
    per = config.captions_per_image
    rel_table = relation_table(scenes, config)
    draws = _Draws(rng)
    captions, records = [], []
    for i in range(n):
        view = _scene_view(scenes, rel_table, i)
        seen: set[str] = set()
        for _ in range(per):
            for _attempt in range(20):  # redraw duplicates; keep the last try if all clash
                text, record = _one_caption(view, config, draws)
                if text.lower().rstrip(".") not in seen:
                    break
            seen.add(text.lower().rstrip("."))
            captions.append(text)
            records.append(record)
    c = len(captions)
    out = {
        "captions": captions,
        "caption_image_ids": np.repeat(np.arange(n, dtype=np.int32), per),
        "caption_objects": np.full((c, MAX_MENTIONS), -1, np.int32),
        "caption_says_shape": np.zeros((c, MAX_MENTIONS), bool),
        "caption_says_colour": np.zeros((c, MAX_MENTIONS), bool),
        "caption_says_size": np.zeros((c, MAX_MENTIONS), bool),
        "caption_says_position": np.zeros((c, MAX_MENTIONS), bool),
        "caption_relation": np.full(c, -1, np.int32),
        "caption_count": np.full(c, -1, np.int32),
        "caption_says_background_kind": np.zeros(c, bool),
        "caption_says_background_tone": np.zeros(c, bool),
    }
    for ci, (mentions, relation, count, say_kind, say_tone) in enumerate(records):
        for k, men in enumerate(mentions):
            out["caption_objects"][ci, k] = men.slot
            out["caption_says_shape"][ci, k] = men.shape
            out["caption_says_colour"][ci, k] = men.colour
            out["caption_says_size"][ci, k] = men.size
            out["caption_says_position"][ci, k] = men.position
        out["caption_relation"][ci] = relation
        out["caption_count"][ci] = count
        out["caption_says_background_kind"][ci] = say_kind
        out["caption_says_background_tone"][ci] = say_tone
    return out


CAPTION_KEYS = (
    "caption_image_ids",
    "caption_objects",
    "caption_says_shape",
    "caption_says_colour",
    "caption_says_size",
    "caption_says_position",
    "caption_relation",
    "caption_count",
    "caption_says_background_kind",
    "caption_says_background_tone",
)


def generate_split(config: WorldConfig, split: str, seed: int = 0) -> dict[str, Any]:
    """Generates one split of the world (deterministic in (config, split, seed)).

    Args:
      config: the world's knobs.
      split: "train", "validation" or "test" (sizes from config).
      seed: base seed; each split uses SeedSequence([seed, split key]).

    Returns:
      dict with ``images`` uint8 [N, S, S, 3], ``image_ids`` int32 [N] (0..N-1), ``captions``
      list[str] of length 5N (image-major), ``caption_image_ids`` int32 [5N], the scene arrays
      of ``sample_scenes`` (SCENE_KEYS) and the caption meaning arrays of
      ``generate_captions`` (CAPTION_KEYS).
    """
    n = config.split_size(split)
    rng = split_rng(seed, split)
    scenes = sample_scenes(config, n, rng)
    captions = generate_captions(scenes, config, rng)
    images = render_scenes(scenes, config)
    return {
        "images": images,
        "image_ids": np.arange(n, dtype=np.int32),
        **captions,
        **scenes,
    }


# ----------------------------------------------------------------------------------------------
# Truth checking and the ambiguity ceiling.


def caption_consistency(
    captions: dict[str, np.ndarray],
    source: dict[str, np.ndarray],
    gallery: dict[str, np.ndarray],
    config: WorldConfig,
) -> np.ndarray:
    """Which gallery images each caption describes truthfully.

    A caption states, for each mentioned object, the attributes it names (shape, colour, size,
    grid cell, read from the object it was written about in ``source``), a relation between its
    first two mentions, the number of objects, and the background kind/tone. It is true of an
    image if distinct valid objects of that image satisfy all of it.

    Args:
      captions: the caption meaning arrays (CAPTION_KEYS) of a split.
      source: scene arrays of the images the captions were written for.
      gallery: scene arrays of the images to test (often the same split).
      config: the world config (relation thresholds).

    Returns:
      bool [C, G].
    """
    rel_table = relation_table(gallery, config)
    g_rows, g_cols = grid_cells(gallery["object_x"], gallery["object_y"])
    s_rows, s_cols = grid_cells(source["object_x"], source["object_y"])
    valid = gallery["object_valid"]
    m = valid.shape[1]
    distinct = ~np.eye(m, dtype=bool)
    out = np.zeros((len(captions["caption_image_ids"]), len(valid)), bool)
    for c, img in enumerate(captions["caption_image_ids"].tolist()):
        ok = np.ones(len(valid), bool)
        if captions["caption_count"][c] >= 0:
            ok &= gallery["n_objects"] == captions["caption_count"][c]
        if captions["caption_says_background_kind"][c]:
            ok &= gallery["background_kind"] == source["background_kind"][img]
        if captions["caption_says_background_tone"][c]:
            ok &= gallery["background_tone"] == source["background_tone"][img]
        matches = []
        for k, slot in enumerate(captions["caption_objects"][c].tolist()):
            if slot < 0:
                break
            match = valid.copy()
            if captions["caption_says_shape"][c, k]:
                match &= gallery["object_shape"] == source["object_shape"][img, slot]
            if captions["caption_says_colour"][c, k]:
                match &= gallery["object_colour"] == source["object_colour"][img, slot]
            if captions["caption_says_size"][c, k]:
                match &= gallery["object_size"] == source["object_size"][img, slot]
            if captions["caption_says_position"][c, k]:
                match &= (g_rows == s_rows[img, slot]) & (g_cols == s_cols[img, slot])
            matches.append(match)
        if len(matches) == 1:
            ok &= matches[0].any(axis=1)
        elif len(matches) >= 2:
            pair = matches[0][:, :, None] & matches[1][:, None, :] & distinct
            rel = captions["caption_relation"][c]
            if rel >= 0:
                pair &= rel_table[:, rel]
            if len(matches) == 2:
                ok &= pair.any(axis=(1, 2))
            else:
                triple = pair[:, :, :, None] & matches[2][:, None, None, :]
                triple &= distinct[None, :, None, :] & distinct[None, None, :, :]
                ok &= triple.any(axis=(1, 2, 3))
        out[c] = ok
    return out


def oracle_recall_at_1(consistency: np.ndarray, caption_image_ids: np.ndarray) -> dict[str, float]:
    """Expected R@1 (percent) of the Bayes-optimal model that knows which captions are true.

    With k_c the number of gallery images caption c is true of, the posterior that c was
    written for image j is consistency[c, j] / k_c. Ranking by it, ties in random order:
    t2i R@1 = mean_c 1 / k_c; i2t R@1 = mean_j |own captions among the top-scored| / |top-scored|,
    the top-scored being the captions true of j with the smallest k_c. This is the ceiling that
    caption ambiguity leaves to any model.

    Args:
      consistency: bool [C, N] from ``caption_consistency`` (gallery = the captions' own images).
      caption_image_ids: int [C], the image each caption was written for.

    Returns:
      {"i2t_r1": ..., "t2i_r1": ...} in percent.
    """
    consistency = np.asarray(consistency, bool)
    caption_image_ids = np.asarray(caption_image_ids)
    own = np.zeros_like(consistency)
    own[np.arange(len(caption_image_ids)), caption_image_ids] = True
    if not np.all(consistency[own]):
        raise ValueError("some caption is not consistent with its own image")
    k = consistency.sum(axis=1)
    t2i = np.mean(1.0 / k)
    k_true = np.where(consistency, k[:, None], np.iinfo(np.int64).max)
    top = consistency & (k_true == k_true.min(axis=0, keepdims=True))
    i2t = np.mean((top & own).sum(axis=0) / top.sum(axis=0))
    return {"i2t_r1": float(100 * i2t), "t2i_r1": float(100 * t2i)}


# ----------------------------------------------------------------------------------------------
# Composed queries.


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
    rng = split_rng(seed, "composed")
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
