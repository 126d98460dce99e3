"""SynthWorld generation, captions, composed queries and the word tokenizer."""

from __future__ import annotations

import dataclasses
import json
import zlib

import numpy as np
import pytest

from rest_jax.data import synthworld as sw
from rest_jax.data import tokenizer as tk

TINY = sw.WorldConfig(n_train=40, n_validation=20, n_test=120)


@pytest.fixture(scope="module")
def tiny_test():
    return sw.generate_split(TINY, "test", seed=0)


def test_split_layout(tiny_test):
    d, n, per = tiny_test, TINY.n_test, TINY.captions_per_image
    assert d["images"].shape == (n, 32, 32, 3) and d["images"].dtype == np.uint8
    assert len(d["captions"]) == per * n
    np.testing.assert_array_equal(d["caption_image_ids"], np.repeat(np.arange(n), per))
    np.testing.assert_array_equal(d["image_ids"], np.arange(n))
    m = TINY.max_slots
    for key in ("object_shape", "object_colour", "object_size", "object_x", "object_valid"):
        assert d[key].shape == (n, m), key
    named = d["object_mentionable"].sum(axis=1)
    assert named.min() >= TINY.min_objects and named.max() <= TINY.max_objects
    np.testing.assert_array_equal(d["n_objects"], d["object_valid"].sum(axis=1))
    for i in range(n):  # five different captions per image
        caps = [c.lower().rstrip(".") for c in d["captions"][per * i : per * (i + 1)]]
        assert len(set(caps)) == per


def test_default_config_counts_and_test_split_shape():
    config = sw.WorldConfig()
    assert (config.n_train, config.n_validation, config.n_test) == (10_000, 1_000, 1_000)
    assert config.captions_per_image == 5 and config.image_size == 32
    test = sw.generate_split(config, "test", seed=0)  # Flickr-1k shaped: 1000 x 5
    assert test["images"].shape == (1000, 32, 32, 3)
    assert len(test["captions"]) == 5000


def test_deterministic_and_seeded(tiny_test):
    again = sw.generate_split(TINY, "test", seed=0)
    np.testing.assert_array_equal(again["images"], tiny_test["images"])
    assert again["captions"] == tiny_test["captions"]
    other_seed = sw.generate_split(TINY, "test", seed=1)
    assert not np.array_equal(other_seed["images"], tiny_test["images"])
    assert other_seed["captions"] != tiny_test["captions"]
    val = sw.generate_split(TINY, "validation", seed=0)
    assert val["captions"][:20] != tiny_test["captions"][:20]


def test_scenes_do_not_depend_on_image_size(tiny_test):
    big = sw.generate_split(sw.WorldConfig(image_size=64, n_test=TINY.n_test), "test", seed=0)
    assert big["images"].shape == (TINY.n_test, 64, 64, 3)
    assert big["captions"] == tiny_test["captions"]
    np.testing.assert_array_equal(big["object_shape"], tiny_test["object_shape"])


def test_every_caption_is_true_of_its_image_and_not_of_all(tiny_test):
    d = tiny_test
    consistency = sw.caption_consistency(d, d, d, TINY)
    own = consistency[np.arange(len(d["captions"])), d["caption_image_ids"]]
    assert own.all()
    # Captions are informative: on average true of a small fraction of the images.
    assert consistency.mean() < 0.1
    # ...but ambiguous: some caption is true of several images.
    assert consistency.sum(axis=1).max() > 1


def test_ambiguity_ceiling_is_far_from_perfect_and_far_from_chance(tiny_test):
    d = tiny_test
    ceiling = sw.oracle_recall_at_1(sw.caption_consistency(d, d, d, TINY), d["caption_image_ids"])
    chance_t2i = 100.0 / TINY.n_test
    # Default captions are specific (1000-image test split: t2i ceiling 94.5), yet some stay
    # ambiguous even among 120 images.
    assert 10 * chance_t2i < ceiling["t2i_r1"] < 99.5
    assert ceiling["i2t_r1"] > ceiling["t2i_r1"]
    # The ambiguity knobs make a harder world: vaguer captions lower the ceiling.
    vague = dataclasses.replace(
        TINY, p_omit_colour=0.5, p_generic_noun=0.3, p_mention_position=0.2, p_mention_size=0.2
    )
    v = sw.generate_split(vague, "test", seed=0)
    vague_ceiling = sw.oracle_recall_at_1(
        sw.caption_consistency(v, v, v, vague), v["caption_image_ids"]
    )
    assert vague_ceiling["t2i_r1"] < ceiling["t2i_r1"] - 10


def test_oracle_rejects_a_false_own_caption():
    consistency = np.array([[True, False], [False, False]])
    with pytest.raises(ValueError, match="not consistent"):
        sw.oracle_recall_at_1(consistency, np.array([0, 1]))


def _one_object_scene(shape: str, colour: str, background_kind: str = "plain"):
    config = sw.WorldConfig(n_test=1, pixel_noise=0.0, max_distractors=0, min_objects=1)
    scenes = sw.sample_scenes(config, 1, np.random.default_rng(0))
    scenes["object_valid"][:] = False
    scenes["object_valid"][0, 0] = True
    scenes["object_shape"][0, 0] = sw.SHAPES.index(shape)
    scenes["object_colour"][0, 0] = sw.COLOURS.index(colour)
    scenes["object_rgb"][0, 0] = sw.COLOUR_RGB[sw.COLOURS.index(colour)]
    scenes["object_x"][0, 0] = scenes["object_y"][0, 0] = 0.5
    scenes["object_radius"][0, 0] = 0.3
    scenes["object_angle"][0, 0] = 0.0
    scenes["background_kind"][0] = sw.BACKGROUND_KINDS.index(background_kind)
    scenes["background_rgb"][0] = 0.5
    return scenes, config


def test_rendering_draws_the_object_in_its_colour_on_its_background():
    scenes, config = _one_object_scene("square", "red")
    img = sw.render_scenes(scenes, config)[0].astype(int)
    expected_red = np.rint(sw.COLOUR_RGB[0] * 255)
    np.testing.assert_allclose(img[16, 16], expected_red, atol=1)
    np.testing.assert_allclose(img[1, 1], [128, 128, 128], atol=1)


def test_shapes_render_distinct_masks():
    masks = []
    for shape in sw.SHAPES:
        scenes, config = _one_object_scene(shape, "blue")
        img = sw.render_scenes(scenes, config)[0].astype(int)
        masks.append(np.abs(img - 128).sum(-1) > 60)
    for i in range(len(masks)):
        assert 10 < masks[i].sum() < 32 * 32 / 2, sw.SHAPES[i]
        for j in range(i):
            assert (masks[i] ^ masks[j]).sum() >= 8, (sw.SHAPES[i], sw.SHAPES[j])
    ring, circle = masks[sw.SHAPES.index("ring")], masks[sw.SHAPES.index("circle")]
    assert circle[16, 16] and not ring[16, 16]


def test_backgrounds_differ_by_kind():
    images = []
    for kind in sw.BACKGROUND_KINDS:
        scenes, config = _one_object_scene("circle", "green", kind)
        images.append(sw.render_scenes(scenes, config)[0, :6, :, :].astype(float))
    assert images[0].std() < 1.0  # plain
    for img in images[1:]:
        assert img.std() > 3.0


def test_composed_records_apply_their_modification():
    n = 60
    d = sw.generate_composed(TINY, n, seed=0)
    assert d["images"].shape == (2 * n, 32, 32, 3) and len(d["modifications"]) == n
    np.testing.assert_array_equal(d["target_ids"], d["reference_ids"] + n)
    kinds = set(d["modification_kind"].tolist())
    assert {sw.MODIFICATIONS.index("colour"), sw.MODIFICATIONS.index("background")} <= kinds
    for q in range(n):
        ref, tgt = d["reference_ids"][q], d["target_ids"][q]
        text = d["modifications"][q]
        kind = sw.MODIFICATIONS[d["modification_kind"][q]]
        assert not np.array_equal(d["images"][ref], d["images"][tgt]), text
        same_bg = d["background_kind"][ref] == d["background_kind"][tgt]
        same_bg &= d["background_tone"][ref] == d["background_tone"][tgt]
        changed = (d["object_colour"][ref] != d["object_colour"][tgt]) | (
            d["object_shape"][ref] != d["object_shape"][tgt]
        )
        changed |= d["object_valid"][ref] != d["object_valid"][tgt]
        changed |= d["object_size"][ref] != d["object_size"][tgt]
        if kind == "background":
            assert not same_bg and not changed.any(), text
            continue
        assert same_bg and changed.sum() == 1, text
        slot = int(np.argmax(changed))
        if kind in ("colour", "shape", "size", "remove"):
            assert sw.COLOURS[d["object_colour"][ref, slot]] in text
            assert sw.SHAPES[d["object_shape"][ref, slot]] in text
        if kind == "colour":
            assert text.endswith(sw.COLOURS[d["object_colour"][tgt, slot]])
        if kind == "remove":
            assert d["n_objects"][tgt] == d["n_objects"][ref] - 1
        if kind == "add":
            assert d["n_objects"][tgt] == d["n_objects"][ref] + 1
            assert sw.SHAPES[d["object_shape"][tgt, slot]] in text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 4},
        {"min_objects": 0},
        {"min_objects": 3, "max_objects": 2},
        {"shapes": ("circle", "hexagon")},
        {"colours": ("red",)},
        {"p_inside": 1.5},
        {"caption_type_weights": (1.0, 1.0)},
        {"max_objects": 6, "max_distractors": 4},
    ],
)
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError):
        sw.WorldConfig(**kwargs)


def test_unknown_split_raises():
    with pytest.raises(ValueError, match="unknown split"):
        sw.generate_split(TINY, "dev", seed=0)


# ----------------------------------------------------------------------------------------------
# Tokenizer.


@pytest.fixture(scope="module")
def tokenizer():
    return tk.WorldTokenizer.build(n_buckets=16, synonyms_path=None)


def test_every_generated_word_is_in_the_vocabulary(tokenizer, tiny_test):
    composed = sw.generate_composed(TINY, 30, seed=1)
    texts = tiny_test["captions"] + composed["modifications"] + composed["captions"]
    for text in texts:
        for word in tk.normalize_text(text):
            assert tokenizer.is_known(word), (word, text)


def test_encode_layout_truncation_and_padding(tokenizer):
    ids = tokenizer.encode(["A red circle.", "a (big) blue: square, left of a star"], max_len=8)
    assert ids.dtype == np.int32 and ids.shape == (2, 8)
    red, circle = tokenizer.word_id("red"), tokenizer.word_id("circle")
    np.testing.assert_array_equal(
        ids[0], [tk.SOT_ID, tokenizer.word_id("a"), red, circle, tk.EOT_ID, 0, 0, 0]
    )
    # 8 words do not fit in 8 - 2 slots: the first 6 are kept and EOT closes the row.
    assert ids[1, -1] == tk.EOT_ID and tk.PAD_ID not in ids[1]
    assert tokenizer.decode(ids[1]) == "a big blue square left of"
    with pytest.raises(ValueError):
        tokenizer.encode(["a"], max_len=1)


def test_unknown_words_use_stable_crc32_buckets(tokenizer):
    word = "cirlce"
    bucket = tk.NUM_SPECIAL + zlib.crc32(word.encode()) % tokenizer.n_buckets
    assert not tokenizer.is_known(word)
    assert tokenizer.word_id(word) == bucket
    assert tk.NUM_SPECIAL <= bucket < tk.NUM_SPECIAL + tokenizer.n_buckets
    known_ids = {tokenizer.word_id(w) for w in tokenizer.words}
    assert min(known_ids) == tk.NUM_SPECIAL + tokenizer.n_buckets
    assert max(known_ids) == tokenizer.vocab_size - 1


def test_normalisation_replaces_the_reference_punctuation():
    assert tk.normalize_text('A "Red" (big)*circle#: ok; ~yes! done.') == [
        "a",
        "red",
        "big",
        "circle",
        "ok",
        "yes",
        "done",
    ]
    assert tk.normalize_text("red,blue") == ["red", "blue"]


def test_tokenizer_json_round_trip(tokenizer, tmp_path):
    path = tmp_path / "tok.json"
    tokenizer.to_json(str(path))
    loaded = tk.WorldTokenizer.from_json(str(path))
    assert loaded == tokenizer
    text = ["a small crimson starlet beside a hoop"]
    np.testing.assert_array_equal(loaded.encode(text, 12), tokenizer.encode(text, 12))
    assert tk.WorldTokenizer.from_json(tokenizer.to_json()).vocab_size == tokenizer.vocab_size


def test_synonyms_file_words_join_the_vocabulary(tmp_path, tokenizer):
    path = tmp_path / "synonyms.json"
    path.write_text(json.dumps({"circle": ["round", "orb"], "blue": ["sapphire hue"]}))
    with_syn = tk.WorldTokenizer.build(n_buckets=16, synonyms_path=str(path))
    for word in ("orb", "sapphire", "hue"):
        assert with_syn.is_known(word) and not tokenizer.is_known(word)
    assert set(tokenizer.words) < set(with_syn.words)


def test_character_corruptions_produce_unknown_tokens(tokenizer, tiny_test):
    tc = pytest.importorskip("rest_jax.data.text_corruptions")
    names = [n for n in tc.TEXT_CORRUPTIONS if any(k in n for k in ("keyboard", "ocr", "typo"))]
    if not names:
        pytest.skip(f"no keyboard/OCR corruption among {tc.TEXT_CORRUPTIONS}")
    name = names[0]
    texts = tiny_test["captions"][:50]
    corrupted = tc.corrupt_texts(texts, name, 7, seed=0, sample_ids=np.arange(len(texts)))

    def is_unknown(ids):
        return (ids >= tk.NUM_SPECIAL) & (ids < tk.NUM_SPECIAL + tokenizer.n_buckets)

    assert not is_unknown(tokenizer.encode(texts, 40)).any()
    assert is_unknown(tokenizer.encode(corrupted, 40)).any()
