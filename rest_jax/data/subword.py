"""Subword (byte-pair encoding) tokenizer of the synthetic world, built on ``tokenizers``.

CLIP's BPE turns a misspelt word into known pieces; a word-level vocabulary turns it into an
unknown id whose embedding was never trained. This tokenizer does what CLIP's does at the
world's scale: a BPE over the world's caption text, with an end-of-word marker ``</w>`` on the
last piece of each word and every lowercase letter, digit and punctuation mark in the base
alphabet, so any typo is spelt with pieces the source model has seen (the source model's
training captions carry light random typos for that reason, ``experiments.augment``).

Ids: PAD = 0, EOT = 1, SOT = 2, UNK = 3 (as the word-level tokenizer's specials; EOT is not 2,
which CLIP reads as its legacy "pool at the largest id" rule), then the pieces. Text is
normalised as by :func:`rest_jax.data.tokenizer.normalize_text` (lowercase, punctuation to
spaces, split on whitespace) before the BPE sees it.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import string
from collections.abc import Iterable, Sequence

import numpy as np

from rest_jax.data.tokenizer import EOT_ID, PAD_ID, PUNCTUATION, SOT_ID, normalize_text

UNK_ID = 3
SPECIAL_TOKENS = ("<pad>", "<eot>", "<sot>", "<unk>")  # ids 0, 1, 2, 3
END_OF_WORD = "</w>"
BASE_ALPHABET = sorted(
    set(string.ascii_lowercase + string.digits + string.punctuation) - set(PUNCTUATION)
)


class SubwordTokenizer:
    """Byte-pair-encoding tokenizer: ``encode(texts, max_len) -> int32 (n, max_len)``.

    Args:
      tokenizer: a ``tokenizers.Tokenizer`` whose model is a BPE with the special tokens of
        ``SPECIAL_TOKENS`` at ids 0-3 (what :meth:`train` builds).
    """

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        for token_id, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != token_id:
                raise ValueError(
                    f"the BPE must hold {token!r} at id {token_id}; "
                    f"got {tokenizer.token_to_id(token)!r}"
                )
        if (PAD_ID, EOT_ID, SOT_ID) != (0, 1, 2):
            raise AssertionError("special ids changed in rest_jax.data.tokenizer")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1024) -> SubwordTokenizer:
        """Learns the merges from ``texts`` (deterministic for the same texts and order).

        Args:
          texts: training text (the world's training captions).
          vocab_size: total ids, specials and base alphabet included.
        """
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        if vocab_size <= len(SPECIAL_TOKENS) + len(BASE_ALPHABET):
            raise ValueError(
                f"vocab_size must exceed {len(SPECIAL_TOKENS) + len(BASE_ALPHABET)} "
                f"(specials and the base alphabet), got {vocab_size}"
            )
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix=END_OF_WORD))
        # Words come pre-normalised: split on whitespace only, in training and in encoding.
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=BASE_ALPHABET,
            end_of_word_suffix=END_OF_WORD,
            show_progress=False,
        )
        lines = (" ".join(normalize_text(t)) for t in texts)
        # The alphabet once more as one-character words: a word's last piece carries the
        # end-of-word marker, so "v</w>" must exist for a typo that ends in "v".
        alphabet_line = " ".join(BASE_ALPHABET)
        tokenizer.train_from_iterator(itertools.chain(lines, [alphabet_line]), trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def from_file(cls, path: str | pathlib.Path) -> SubwordTokenizer:
        """Loads a ``tokenizer.json`` written by :meth:`save`."""
        from tokenizers import Tokenizer

        path = pathlib.Path(path)
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on bad files
            raise ValueError(f"cannot read the subword tokenizer {path}: {err}") from err
        return cls(tokenizer)

    def save(self, path: str | pathlib.Path) -> None:
        """Writes the tokenizer as ``tokenizer.json`` (stable text: sorted keys)."""
        state = json.loads(self._tokenizer.to_str())
        pathlib.Path(path).write_text(json.dumps(state, sort_keys=True, indent=1) + "\n")

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def pieces(self, text: str) -> list[str]:
        """The pieces of one text (for reading what a typo becomes)."""
        return self._tokenizer.encode(normalize_text(text), is_pretokenized=True).tokens

    def encode(self, texts: Sequence[str] | str, max_len: int = 32) -> np.ndarray:
        """Token ids ``SOT p_1 .. p_k EOT PAD ..`` per text: int32 ``(n, max_len)``.

        Texts of more than ``max_len - 2`` pieces keep their first ``max_len - 2`` and still
        end with EOT.
        """
        if isinstance(texts, str):
            texts = [texts]
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (room for SOT and EOT), got {max_len}")
        words = [normalize_text(t) for t in texts]
        out = np.zeros((len(words), max_len), np.int32)
        for row, enc in enumerate(self._tokenizer.encode_batch(words, is_pretokenized=True)):
            ids = enc.ids[: max_len - 2]
            out[row, : len(ids) + 2] = [SOT_ID, *ids, EOT_ID]
        return out

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Readable text of one id row (stops at EOT)."""
        pieces = []
        for i in np.asarray(ids).tolist():
            if i == EOT_ID:
                break
            if i in (PAD_ID, SOT_ID):
                continue
            token = self._tokenizer.id_to_token(i)
            if token is None:
                raise ValueError(f"id {i} outside [0, {self.vocab_size})")
            pieces.append(token)
        return "".join(pieces).replace(END_OF_WORD, " ").strip()
