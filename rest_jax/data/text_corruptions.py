"""Text corruptions for caption queries (docs/method.md section 8.2).

Character level, ``level`` an int ``L`` in 1..7 (``CHAR_LEVELS``): a fraction ``0.05 L`` of the
words is perturbed, each perturbed word gets ``max(1, int(0.3 len))`` character edits:

* ``keyboard``: letters replaced by a neighbouring key (QWERTY layout, case kept);
* ``ocr``: characters replaced by look-alikes (``o -> 0``, ``l -> 1``, ``m -> rn``, ...);
* ``char_insert`` / ``char_substitute``: random letters inserted / substituted;
* ``char_swap``: adjacent (differing) characters swapped;
* ``char_delete``: characters deleted (a word keeps at least one).

Word level, ``level`` a float rate ``r`` in (0, 1] (the benchmark uses ``WORD_RATES`` = 0.30 and
0.35): ``round(r n)`` of the ``n`` words are affected:

* ``synonym_replacement``: words replaced by a synonym from the bundled table
  ``synonyms.json`` (about 400 common caption words: colours, shapes, sizes, positions and
  relations, people, animals, objects, verbs; written for this package);
* ``word_insertion``: synonyms of random words inserted at random places (EDA's random
  insertion); a random table word when no word of the text has synonyms;
* ``word_swap``: the words at ``round(r n)`` positions (at least 2) are permuted cyclically, so
  every one of them moves (EDA swaps pairs; here the rate is the fraction of words that move);
* ``word_deletion``: words deleted (at least one word is kept);
* ``punctuation_insertion``: a mark from ``. , ! ? ; :`` inserted before each chosen word.

``round`` is stochastic rounding (``floor(x)`` plus one with probability ``x - floor(x)``), so
the expected fraction is exact even for short captions. Only words that the operation can change
are chosen: character edits need a word of at least 2 characters with a letter, synonym
replacement needs a word in the table; when fewer words qualify, all of them are perturbed.
Words are whitespace-separated tokens; surrounding punctuation is kept and not edited.
Character-level types keep the original whitespace; word-level types join words with single
spaces.

Sentence-level corruptions (style rewrites: formal, casual, active, passive; back translation)
need a language model and are left out.

Determinism. Text ``sample_id`` draws from
``np.random.default_rng(np.random.SeedSequence([seed, sample_id, 1, corruption_index]))``,
independent of the batch. The level is deliberately not part of the key (common random numbers):
words are taken in one random order and each word's edit depends only on the word's position,
so a higher character level perturbs a superset of the words of a lower one, with the same edits.
"""

from __future__ import annotations

import functools
import json
import math
import re
import string
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rest_jax.data.seeds import check_non_negative_int

CHAR_CORRUPTIONS: tuple[str, ...] = (
    "keyboard",
    "ocr",
    "char_insert",
    "char_substitute",
    "char_swap",
    "char_delete",
)
WORD_CORRUPTIONS: tuple[str, ...] = (
    "synonym_replacement",
    "word_insertion",
    "word_swap",
    "word_deletion",
    "punctuation_insertion",
)
TEXT_CORRUPTIONS: tuple[str, ...] = CHAR_CORRUPTIONS + WORD_CORRUPTIONS
CHAR_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
WORD_RATES: tuple[float, ...] = (0.30, 0.35)
CHAR_FRACTION_PER_LEVEL = 0.05
CHARS_PER_WORD_FRACTION = 0.3
PUNCTUATION_MARKS: tuple[str, ...] = (".", ",", "!", "?", ";", ":")

_TEXT_DOMAIN = 1  # seed-key tag; images use 0
_SYNONYMS_PATH = Path(__file__).with_name("synonyms.json")
_LETTERS = string.ascii_lowercase
_TOKEN = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)

# QWERTY rows; row r is shifted right of row r - 1 by about half a key.
_KEY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
# Common OCR confusions (a character may become a look-alike string).
_OCR_CONFUSIONS: dict[str, tuple[str, ...]] = {
    "a": ("o", "@", "d"),
    "b": ("6", "h"),
    "c": ("e", "("),
    "d": ("cl", "o"),
    "e": ("c", "o"),
    "f": ("t",),
    "g": ("9", "q"),
    "h": ("b", "n"),
    "i": ("1", "l", "!"),
    "j": ("i", ";"),
    "k": ("lc", "x"),
    "l": ("1", "I", "i"),
    "m": ("rn", "nn"),
    "n": ("m", "h", "ri"),
    "o": ("0", "c"),
    "p": ("q", "b"),
    "q": ("g", "9"),
    "r": ("n", "i"),
    "s": ("5", "z"),
    "t": ("f", "+"),
    "u": ("v", "ii"),
    "v": ("u", "y"),
    "w": ("vv", "uu"),
    "x": ("k", "%"),
    "y": ("v", "j"),
    "z": ("2", "s"),
    "0": ("o", "O"),
    "1": ("l", "I"),
    "2": ("z", "Z"),
    "5": ("s", "S"),
    "6": ("b",),
    "8": ("B",),
    "9": ("g",),
}


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------
def corrupt_text(text: str, name: str, level, *, seed: int, sample_id: int) -> str:
    """Corrupts one caption.

    Args:
      text: the caption.
      name: one of ``TEXT_CORRUPTIONS``.
      level: for character-level types an int in 1..7 (fraction ``0.05 level`` of the words);
        for word-level types the rate, a float in (0, 1] (benchmark: 0.30 or 0.35).
      seed: non-negative experiment seed.
      sample_id: non-negative id of this caption.

    Returns:
      The corrupted caption.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    index, fraction = _check_name_and_level(name, level)
    seed = check_non_negative_int(seed, "seed")
    sample_id = check_non_negative_int(sample_id, "sample id")
    return _corrupt(text, name, index, fraction, seed, sample_id)


def corrupt_texts(
    texts: Sequence[str], name: str, level, *, seed: int, sample_ids: Sequence[int]
) -> list[str]:
    """Corrupts captions; ``out[i] == corrupt_text(texts[i], ..., sample_id=sample_ids[i])``.

    Args:
      texts: the captions.
      name: one of ``TEXT_CORRUPTIONS``.
      level: as in ``corrupt_text``.
      seed: non-negative experiment seed.
      sample_ids: one non-negative id per caption.

    Returns:
      The corrupted captions, in order.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of str, got a single str")
    texts = list(texts)
    ids = list(np.asarray(sample_ids).reshape(-1)) if np.ndim(sample_ids) == 1 else None
    if ids is None or len(ids) != len(texts):
        raise ValueError(
            f"sample_ids must be a 1-D sequence with one id per text ({len(texts)}), "
            f"got shape {np.shape(sample_ids)}"
        )
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"texts must contain str, got {type(t).__name__}")
    index, fraction = _check_name_and_level(name, level)
    seed = check_non_negative_int(seed, "seed")
    ids = [check_non_negative_int(i, "sample id") for i in ids]
    return [_corrupt(t, name, index, fraction, seed, i) for t, i in zip(texts, ids)]


@functools.cache
def load_synonyms() -> dict[str, tuple[str, ...]]:
    """The bundled synonym table: lowercase word -> tuple of single-word synonyms."""
    with open(_SYNONYMS_PATH, encoding="utf-8") as f:
        table = json.load(f)
    return {word: tuple(syns) for word, syns in table.items()}


# ----------------------------------------------------------------------------------------------
# Validation and randomness
# ----------------------------------------------------------------------------------------------
def _check_name_and_level(name: str, level) -> tuple[int, float]:
    if name not in TEXT_CORRUPTIONS:
        raise ValueError(f"unknown text corruption {name!r}; choose from {TEXT_CORRUPTIONS}")
    if name in CHAR_CORRUPTIONS:
        if isinstance(level, bool) or not isinstance(level, int | np.integer):
            raise TypeError(f"level of {name!r} must be an int in 1..7, got {level!r}")
        if level not in CHAR_LEVELS:
            raise ValueError(f"level of {name!r} must be in 1..7, got {level}")
        fraction = CHAR_FRACTION_PER_LEVEL * int(level)
    else:
        if isinstance(level, bool) or not isinstance(level, float | np.floating):
            raise TypeError(
                f"level of word-level {name!r} is the rate, a float in (0, 1] such as 0.3; "
                f"got {level!r}"
            )
        if not 0.0 < level <= 1.0:
            raise ValueError(f"rate of {name!r} must be in (0, 1], got {level}")
        fraction = float(level)
    return TEXT_CORRUPTIONS.index(name), fraction


def _key(seed: int, sample_id: int, index: int) -> list[int]:
    return [seed, sample_id, _TEXT_DOMAIN, index]


def _stochastic_round(x: float, u: float) -> int:
    """``floor(x) + [u < x - floor(x)]``: unbiased for ``u ~ U(0, 1)``, monotone in ``x``."""
    base = math.floor(x)
    return base + int(u < x - base)


# ----------------------------------------------------------------------------------------------
# Character-level edits: (core word, rng) -> a different word
# ----------------------------------------------------------------------------------------------
@functools.cache
def _keyboard_neighbours() -> dict[str, str]:
    """Keys touching each letter on a staggered QWERTY keyboard."""
    pos = {ch: (r, c) for r, row in enumerate(_KEY_ROWS) for c, ch in enumerate(row)}
    near = {}
    for ch, (r, c) in pos.items():
        cells = [(r, c - 1), (r, c + 1), (r - 1, c), (r - 1, c + 1), (r + 1, c - 1), (r + 1, c)]
        near[ch] = "".join(
            _KEY_ROWS[rr][cc]
            for rr, cc in cells
            if 0 <= rr < len(_KEY_ROWS) and 0 <= cc < len(_KEY_ROWS[rr])
        )
    return near


def _edit_count(word: str) -> int:
    return max(1, int(CHARS_PER_WORD_FRACTION * len(word)))


def _match_case(original: str, new: str) -> str:
    if original.isupper():
        return new.upper()
    if original[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _replace_chars(word: str, rng, options: Callable[[str], Sequence[str]]) -> str:
    """Replaces ``_edit_count`` characters that have options with a random option each."""
    positions = [i for i, ch in enumerate(word) if options(ch)]
    chosen = rng.permutation(positions)[: _edit_count(word)]
    chars = list(word)
    for i in chosen:
        choices = options(word[i])
        chars[i] = _match_case(word[i], choices[rng.integers(len(choices))])
    return "".join(chars)


def _keyboard(word: str, rng) -> str:
    near = _keyboard_neighbours()
    return _replace_chars(word, rng, lambda ch: near.get(ch.lower(), ""))


def _ocr(word: str, rng) -> str:
    return _replace_chars(
        word, rng, lambda ch: _OCR_CONFUSIONS.get(ch) or _OCR_CONFUSIONS.get(ch.lower(), ())
    )


def _char_substitute(word: str, rng) -> str:
    return _replace_chars(
        word, rng, lambda ch: _LETTERS.replace(ch.lower(), "") if ch.isalpha() else ""
    )


def _char_insert(word: str, rng) -> str:
    chars = list(word)
    for _ in range(_edit_count(word)):
        letter = _LETTERS[rng.integers(len(_LETTERS))]
        chars.insert(
            int(rng.integers(len(chars) + 1)), letter.upper() if word.isupper() else letter
        )
    return "".join(chars)


def _char_swap(word: str, rng) -> str:
    """Swaps up to ``_edit_count`` non-overlapping adjacent pairs of different characters."""
    candidates = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
    taken: set[int] = set()
    chars = list(word)
    for i in rng.permutation(candidates):
        if len(taken) // 2 == _edit_count(word):
            break
        if i in taken or i + 1 in taken:
            continue
        taken.update((i, i + 1))
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars)


def _char_delete(word: str, rng) -> str:
    count = min(_edit_count(word), len(word) - 1)
    drop = set(rng.permutation(len(word))[:count].tolist())
    return "".join(ch for i, ch in enumerate(word) if i not in drop)


def _has_letter_and_two_chars(word: str) -> bool:
    return len(word) >= 2 and any(ch.isalpha() for ch in word)


_CHAR_EDITS: dict[str, tuple[Callable, Callable[[str], bool]]] = {
    "keyboard": (
        _keyboard,
        lambda w: len(w) >= 2 and any(ch.lower() in _keyboard_neighbours() for ch in w),
    ),
    "ocr": (
        _ocr,
        lambda w: len(w) >= 2 and any(ch.lower() in _OCR_CONFUSIONS for ch in w),
    ),
    "char_insert": (_char_insert, _has_letter_and_two_chars),
    "char_substitute": (_char_substitute, _has_letter_and_two_chars),
    "char_swap": (
        _char_swap,
        lambda w: _has_letter_and_two_chars(w) and any(a != b for a, b in zip(w, w[1:])),
    ),
    "char_delete": (_char_delete, _has_letter_and_two_chars),
}


def _split_token(token: str) -> tuple[str, str, str]:
    """(leading punctuation, core, trailing punctuation) of a whitespace token."""
    return _TOKEN.match(token).groups()


def _corrupt_chars(text, name, index, fraction, seed, sample_id) -> str:
    pieces = re.split(r"(\s+)", text)
    word_slots = [i for i, p in enumerate(pieces) if p and not p.isspace()]
    rng = np.random.default_rng(np.random.SeedSequence(_key(seed, sample_id, index)))
    count = _stochastic_round(fraction * len(word_slots), rng.random())
    edit, eligible = _CHAR_EDITS[name]
    done = 0
    for w in rng.permutation(len(word_slots)):
        if done == count:
            break
        lead, core, trail = _split_token(pieces[word_slots[w]])
        if not eligible(core):
            continue
        word_rng = np.random.default_rng(
            np.random.SeedSequence([*_key(seed, sample_id, index), 1 + int(w)])
        )
        pieces[word_slots[w]] = lead + edit(core, word_rng) + trail
        done += 1
    return "".join(pieces)


# ----------------------------------------------------------------------------------------------
# Word-level corruptions: (words, count, rng) -> words
# ----------------------------------------------------------------------------------------------
def _synonyms_of(token: str) -> tuple[str, ...]:
    return load_synonyms().get(_split_token(token)[1].lower(), ())


def _synonym_replacement(words: list[str], count: int, rng) -> list[str]:
    words = list(words)
    done = 0
    for i in rng.permutation(len(words)):
        if done == count:
            break
        syns = _synonyms_of(words[i])
        if syns:
            lead, core, trail = _split_token(words[i])
            words[i] = lead + _match_case(core, syns[rng.integers(len(syns))]) + trail
            done += 1
    return words


def _word_insertion(words: list[str], count: int, rng) -> list[str]:
    words = list(words)
    vocabulary = sorted(load_synonyms())
    for _ in range(count):
        sources = [s for w in words for s in _synonyms_of(w)]
        pool = sources or vocabulary
        words.insert(int(rng.integers(len(words) + 1)), pool[rng.integers(len(pool))])
    return words


def _word_swap(words: list[str], count: int, rng) -> list[str]:
    """Moves ``count`` (>= 2) words of pairwise different spelling one step along a cycle."""
    count = max(count, 2)
    chosen, seen = [], set()
    for i in rng.permutation(len(words)):
        if len(chosen) == count:
            break
        key = words[i].lower()
        if key not in seen:
            seen.add(key)
            chosen.append(int(i))
    if len(chosen) < 2:
        return list(words)
    out = list(words)
    for j, i in enumerate(chosen):
        out[chosen[(j + 1) % len(chosen)]] = words[i]
    return out


def _word_deletion(words: list[str], count: int, rng) -> list[str]:
    drop = set(rng.permutation(len(words))[: min(count, len(words) - 1)].tolist())
    return [w for i, w in enumerate(words) if i not in drop]


def _punctuation_insertion(words: list[str], count: int, rng) -> list[str]:
    before = set(rng.permutation(len(words))[:count].tolist())
    out = []
    for i, w in enumerate(words):
        if i in before:
            out.append(PUNCTUATION_MARKS[rng.integers(len(PUNCTUATION_MARKS))])
        out.append(w)
    return out


_WORD_OPS: dict[str, Callable] = {
    "synonym_replacement": _synonym_replacement,
    "word_insertion": _word_insertion,
    "word_swap": _word_swap,
    "word_deletion": _word_deletion,
    "punctuation_insertion": _punctuation_insertion,
}


def _corrupt(text, name, index, fraction, seed, sample_id) -> str:
    if name in _CHAR_EDITS:
        return _corrupt_chars(text, name, index, fraction, seed, sample_id)
    words = text.split()
    if not words:
        return text
    rng = np.random.default_rng(np.random.SeedSequence(_key(seed, sample_id, index)))
    count = _stochastic_round(fraction * len(words), rng.random())
    if count == 0:
        return " ".join(words)
    return " ".join(_WORD_OPS[name](words, count, rng))


assert tuple(_CHAR_EDITS) == CHAR_CORRUPTIONS and tuple(_WORD_OPS) == WORD_CORRUPTIONS
