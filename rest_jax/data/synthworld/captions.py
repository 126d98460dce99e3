"""Captions: each image's true descriptions from varied templates with synonyms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rest_jax.data.synthworld.scenes import grid_cells, relation_table
from rest_jax.data.synthworld.words import (
    BACKGROUND_KIND_WORDS,
    BACKGROUND_KINDS,
    BACKGROUND_NOUNS,
    BACKGROUND_TEMPLATES,
    BACKGROUND_TONE_WORDS,
    BACKGROUND_TONES,
    CAPTION_TYPES,
    COLOUR_WORDS,
    COLOURS,
    COUNT_ONE_TEMPLATES,
    COUNT_TEMPLATES,
    COUNT_WORDS,
    GENERIC_NOUNS,
    LIST_TEMPLATES_2,
    LIST_TEMPLATES_3,
    MAX_MENTIONS,
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
)
from rest_jax.data.synthworld.world_config import WorldConfig


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
