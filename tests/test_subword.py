"""The world's subword tokenizer and the training augmentations."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.augment import AugmentConfig, augment_captions, augment_images
from rest_jax.data import tokenizer as tk
from rest_jax.data.subword import UNK_ID, SubwordTokenizer
from rest_jax.data.text_corruptions import corrupt_texts

CAPTIONS = [
    "A large red circle in the middle on a dark striped background",
    "two small blue squares next to a green star",
    "an orange ring above a purple triangle",
] * 20


@pytest.fixture(scope="module")
def bpe():
    return SubwordTokenizer.train(CAPTIONS, vocab_size=200)


def test_layout_truncation_and_round_trip(bpe, tmp_path):
    ids = bpe.encode(["A red circle.", CAPTIONS[0]], max_len=6)
    assert ids.dtype == np.int32 and ids.shape == (2, 6)
    assert ids[0, 0] == tk.SOT_ID and tk.EOT_ID in ids[0] and ids[0, -1] == tk.PAD_ID
    assert ids[1, 0] == tk.SOT_ID and ids[1, -1] == tk.EOT_ID  # cut, still ends with EOT
    assert bpe.decode(bpe.encode("A red circle.", 16)[0]) == "a red circle"
    bpe.save(tmp_path / "tokenizer.json")
    again = SubwordTokenizer.from_file(tmp_path / "tokenizer.json")
    np.testing.assert_array_equal(again.encode(CAPTIONS, 24), bpe.encode(CAPTIONS, 24))


def test_typos_become_known_pieces_not_unknown_ids(bpe):
    """What a word-level vocabulary maps to an untrained bucket, the BPE spells in pieces."""
    typos = corrupt_texts(CAPTIONS[:3], "keyboard", 5, seed=0, sample_ids=np.arange(3))
    assert typos != CAPTIONS[:3]
    ids = bpe.encode(typos + ["qzxv 7 #"], 64)
    assert not np.any(ids == UNK_ID)
    word_level = tk.WorldTokenizer(sorted({w for c in CAPTIONS for w in tk.normalize_text(c)}))
    unknown = [w for t in typos for w in tk.normalize_text(t) if not word_level.is_known(w)]
    assert unknown  # the word-level tokenizer loses these words


def test_bad_files_and_sizes_are_clear_errors(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        SubwordTokenizer.from_file(bad)
    with pytest.raises(ValueError, match="vocab_size"):
        SubwordTokenizer.train(CAPTIONS, vocab_size=10)


def test_augmentations_are_seeded_mild_and_checked():
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    cfg = AugmentConfig(p_image=1.0)
    a = augment_images(images, cfg, np.random.default_rng(1))
    b = augment_images(images, cfg, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == images.shape and np.any(a != images)
    off = augment_images(images, AugmentConfig(p_image=0.0), np.random.default_rng(1))
    np.testing.assert_array_equal(off, images)
    with pytest.raises(ValueError, match="uint8"):
        augment_images(images.astype(np.float32), cfg, np.random.default_rng(0))
    captions = augment_captions(CAPTIONS, AugmentConfig(typo_rate=0.3), np.random.default_rng(2))
    changed = sum(x != y for c, d in zip(captions, CAPTIONS) for x, y in zip(c.split(), d.split()))
    total = sum(len(c.split()) for c in CAPTIONS)
    assert 0.1 * total < changed < 0.5 * total
    assert (
        augment_captions(CAPTIONS, AugmentConfig(typo_rate=0.0), np.random.default_rng(2))
        == CAPTIONS
    )
