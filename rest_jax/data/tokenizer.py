"""Word-level tokenizer for the synthetic world (docs/method.md section 8.3).

Ids: PAD = 0, SOT = 1, EOT = 2, then ``n_buckets`` hashed buckets for unknown words, then the
vocabulary in sorted order. The vocabulary is every word the SynthWorld caption and modification
grammar can emit (``synthworld.vocabulary_words``) plus every word of
``rest_jax/data/synonyms.json`` when that file exists (so synonym replacement, a text
corruption, stays in-vocabulary). A word outside the vocabulary (a typo, say) maps to bucket
``crc32(word) mod n_buckets``: stable across runs and machines, unlike Python's ``hash``.

Normalisation (the reference caption preprocessing): lowercase, replace each of
``.!"()*#:;~`` and ``,`` by a space, split on whitespace.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from rest_jax.data import synthworld

# EOT is not 2: CLIP text towers treat eos_token_id == 2 as the legacy OpenAI rule (pool at the
# largest token id), which would pool at an arbitrary word here.
PAD_ID, EOT_ID, SOT_ID = 0, 1, 2
NUM_SPECIAL = 3
PUNCTUATION = '.!"()*#:;~,'
_TRANSLATION = str.maketrans(dict.fromkeys(PUNCTUATION, " "))
SYNONYMS_PATH = os.path.join(os.path.dirname(__file__), "synonyms.json")
FORMAT_VERSION = 1


def normalize_text(text: str) -> list[str]:
    """Lowercases, replaces ``.!"()*#:;~`` and commas by spaces, splits into words."""
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    return text.lower().translate(_TRANSLATION).split()


def _strings_in(obj: Any) -> Iterable[str]:
    """Every string in a nested JSON value (keys included)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _strings_in(key)
            yield from _strings_in(value)
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _strings_in(item)


def synonym_words(path: str = SYNONYMS_PATH) -> list[str]:
    """Normalised words of a synonyms JSON file (any nesting of dicts/lists); [] if absent."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    words = set()
    for phrase in _strings_in(data):
        words.update(normalize_text(phrase))
    return sorted(words)


class WorldTokenizer:
    """Word-level tokenizer with hashed unknown-word buckets.

    Args:
      words: the vocabulary (deduplicated and sorted here, so the order given does not matter).
      n_buckets: number of hashed buckets for unknown words (>= 1).
    """

    def __init__(self, words: Sequence[str], n_buckets: int = 64):
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
        cleaned = set()
        for word in words:
            parts = normalize_text(word)
            if len(parts) != 1:
                raise ValueError(f"vocabulary entry {word!r} is not a single normalised word")
            cleaned.add(parts[0])
        self.words: tuple[str, ...] = tuple(sorted(cleaned))
        self.n_buckets = int(n_buckets)
        offset = NUM_SPECIAL + self.n_buckets
        self._ids = {w: offset + i for i, w in enumerate(self.words)}

    @classmethod
    def build(
        cls, n_buckets: int = 64, synonyms_path: str | None = SYNONYMS_PATH
    ) -> WorldTokenizer:
        """The SynthWorld tokenizer: grammar words plus synonyms.json words if present."""
        words = set(synthworld.vocabulary_words())
        if synonyms_path is not None:
            words.update(synonym_words(synonyms_path))
        return cls(sorted(words), n_buckets=n_buckets)

    @property
    def vocab_size(self) -> int:
        """Number of ids (specials + buckets + words)."""
        return NUM_SPECIAL + self.n_buckets + len(self.words)

    def word_id(self, word: str) -> int:
        """Id of one normalised word; unknown words go to NUM_SPECIAL + crc32(word) % n_buckets."""
        known = self._ids.get(word)
        if known is not None:
            return known
        return NUM_SPECIAL + zlib.crc32(word.encode("utf-8")) % self.n_buckets

    def is_known(self, word: str) -> bool:
        """Whether a normalised word is in the vocabulary."""
        return word in self._ids

    def encode(self, texts: Sequence[str] | str, max_len: int = 32) -> np.ndarray:
        """Token ids ``SOT w_1 .. w_k EOT PAD ..`` per text: int32 [N, max_len].

        Texts longer than ``max_len - 2`` words keep their first ``max_len - 2`` words and
        still end with EOT.
        """
        if isinstance(texts, str):
            texts = [texts]
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (room for SOT and EOT), got {max_len}")
        out = np.zeros((len(texts), max_len), np.int32)
        for row, text in enumerate(texts):
            ids = [self.word_id(w) for w in normalize_text(text)[: max_len - 2]]
            out[row, : len(ids) + 2] = [SOT_ID, *ids, EOT_ID]
        return out

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Readable text of one id row (stops at EOT; unknown buckets print as <unk:k>)."""
        words = []
        for i in np.asarray(ids).tolist():
            if i == EOT_ID:
                break
            if i in (PAD_ID, SOT_ID):
                continue
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"id {i} outside [0, {self.vocab_size})")
            if i < NUM_SPECIAL + self.n_buckets:
                words.append(f"<unk:{i - NUM_SPECIAL}>")
            else:
                words.append(self.words[i - NUM_SPECIAL - self.n_buckets])
        return " ".join(words)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "format_version": FORMAT_VERSION,
            "n_buckets": self.n_buckets,
            "words": list(self.words),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> WorldTokenizer:
        """Inverse of ``to_dict``."""
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported tokenizer format {state.get('format_version')!r}")
        return cls(state["words"], n_buckets=state["n_buckets"])

    def to_json(self, path: str | None = None) -> str:
        """JSON text of the tokenizer; also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str) -> WorldTokenizer:
        """Loads from JSON text or from a path to a JSON file."""
        if os.path.exists(text_or_path):
            with open(text_or_path, encoding="utf-8") as f:
                text_or_path = f.read()
        return cls.from_dict(json.loads(text_or_path))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, WorldTokenizer)
            and self.words == other.words
            and self.n_buckets == other.n_buckets
        )

    def __hash__(self) -> int:
        return hash((self.words, self.n_buckets))
