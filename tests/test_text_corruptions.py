"""Tests for rest_jax.data.text_corruptions (docs/method.md section 8.2)."""

import itertools

import numpy as np
import pytest

from rest_jax.data.text_corruptions import (
    CHAR_CORRUPTIONS,
    CHAR_LEVELS,
    PUNCTUATION_MARKS,
    TEXT_CORRUPTIONS,
    WORD_CORRUPTIONS,
    WORD_RATES,
    corrupt_text,
    corrupt_texts,
    load_synonyms,
)

COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar", "star", "diamond")
SIZES = ("small", "medium", "large", "tiny", "big")
RELATIONS = ("to the left of", "to the right of", "above", "below", "next to", "inside", "around")
SUBJECTS = ("a man", "a woman", "two children", "a dog", "a black cat", "a young boy", "people")
VERBS = ("sitting on", "standing near", "holding", "walking along", "riding", "looking at")
THINGS = ("a wooden bench", "the beach", "a red umbrella", "a busy street", "a large table")


def caption_corpus(count: int = 400, seed: int = 0) -> list[str]:
    """Captions like SynthWorld's and COCO's, from templates."""
    rng = np.random.default_rng(seed)

    def pick(options):
        return options[rng.integers(len(options))]

    captions = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            captions.append(
                f"a {pick(SIZES)} {pick(COLOURS)} {pick(SHAPES)} {pick(RELATIONS)} "
                f"a {pick(COLOURS)} {pick(SHAPES)}"
            )
        elif kind == 1:
            captions.append(
                f"there is a {pick(COLOURS)} {pick(SHAPES)} on a {pick(('dark', 'light'))} "
                f"{pick(('striped', 'plain', 'noisy'))} background"
            )
        elif kind == 2:
            captions.append(f"{pick(SUBJECTS)} {pick(VERBS)} {pick(THINGS)}")
        else:
            subject = pick(SUBJECTS)
            captions.append(f"{subject[0].upper()}{subject[1:]} is {pick(VERBS)} {pick(THINGS)}.")
    return captions


CORPUS = caption_corpus()
LEVEL_OF = {name: (4 if name in CHAR_CORRUPTIONS else 0.3) for name in TEXT_CORRUPTIONS}


def changed_word_fraction(before: list[str], after: list[str]) -> float:
    """Fraction of words that differ position by position (word count must be unchanged)."""
    changed = total = 0
    for b, a in zip(before, after):
        bw, aw = b.split(), a.split()
        assert len(bw) == len(aw), (b, a)
        changed += sum(x != y for x, y in zip(bw, aw))
        total += len(bw)
    return changed / total


def word_count_change(before: list[str], after: list[str]) -> float:
    """(words after - words before) / words before, over the corpus."""
    n_before = sum(len(b.split()) for b in before)
    n_after = sum(len(a.split()) for a in after)
    return (n_after - n_before) / n_before


def test_names_match_spec():
    """The character- and word-level corruptions of docs/method.md section 8.2."""
    assert CHAR_CORRUPTIONS == (
        "keyboard",
        "ocr",
        "char_insert",
        "char_substitute",
        "char_swap",
        "char_delete",
    )
    assert WORD_CORRUPTIONS == (
        "synonym_replacement",
        "word_insertion",
        "word_swap",
        "word_deletion",
        "punctuation_insertion",
    )
    assert CHAR_LEVELS == tuple(range(1, 8)) and WORD_RATES == (0.30, 0.35)


@pytest.mark.parametrize("name", CHAR_CORRUPTIONS)
def test_char_level_perturbs_the_level_fraction_of_words(name):
    ids = np.arange(len(CORPUS))
    for level in CHAR_LEVELS:
        out = corrupt_texts(CORPUS, name, level, seed=0, sample_ids=ids)
        fraction = changed_word_fraction(CORPUS, out)
        assert abs(fraction - 0.05 * level) < 0.01, (level, fraction)


@pytest.mark.parametrize("rate", WORD_RATES)
@pytest.mark.parametrize("name", WORD_CORRUPTIONS)
def test_word_level_affects_the_rate_fraction_of_words(name, rate):
    out = corrupt_texts(CORPUS, name, rate, seed=0, sample_ids=np.arange(len(CORPUS)))
    if name in ("synonym_replacement", "word_swap"):
        measured = changed_word_fraction(CORPUS, out)
    elif name == "word_deletion":
        measured = -word_count_change(CORPUS, out)
    else:  # insertions add one word or mark per affected word
        measured = word_count_change(CORPUS, out)
    assert abs(measured - rate) < 0.03, measured


@pytest.mark.parametrize("name", TEXT_CORRUPTIONS)
def test_deterministic_and_keyed_by_seed_and_sample_id(name):
    level = LEVEL_OF[name]
    texts = CORPUS[:40]
    ids = np.arange(100, 140)
    out = corrupt_texts(texts, name, level, seed=5, sample_ids=ids)
    assert out == corrupt_texts(texts, name, level, seed=5, sample_ids=ids)
    assert out != corrupt_texts(texts, name, level, seed=6, sample_ids=ids)
    assert out != corrupt_texts(texts, name, level, seed=5, sample_ids=ids + 1000)
    singles = [corrupt_text(t, name, level, seed=5, sample_id=int(i)) for t, i in zip(texts, ids)]
    assert out == singles
    order = np.random.default_rng(0).permutation(len(texts))
    shuffled = corrupt_texts([texts[i] for i in order], name, level, seed=5, sample_ids=ids[order])
    assert shuffled == [out[i] for i in order]


@pytest.mark.parametrize("name", CHAR_CORRUPTIONS)
def test_higher_level_perturbs_a_superset_with_the_same_edits(name):
    for i, text in enumerate(CORPUS[:60]):
        words = text.split()
        previous = words
        for level in CHAR_LEVELS:
            current = corrupt_text(text, name, level, seed=1, sample_id=i).split()
            for w, p, c in zip(words, previous, current):
                if p != w:
                    assert c == p, (text, level)
            previous = current


def test_char_edits_have_their_kind():
    rows = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
    key_xy = {ch: (r, c + 0.5 * r) for r, row in enumerate(rows) for c, ch in enumerate(row)}

    def is_subsequence(short, long):
        it = iter(long)
        return all(ch in it for ch in short)

    for i, text in enumerate(CORPUS[:80]):
        pairs = {
            name: list(zip(text.split(), corrupt_text(text, name, 7, seed=0, sample_id=i).split()))
            for name in CHAR_CORRUPTIONS
        }
        for old, new in pairs["keyboard"]:
            for a, b in zip(old, new):
                if a != b:
                    (ra, xa), (rb, xb) = key_xy[a.lower()], key_xy[b.lower()]
                    assert abs(ra - rb) <= 1 and abs(xa - xb) <= 1 and a.isupper() == b.isupper()
        for old, new in pairs["char_delete"]:
            assert old == new or (len(new) < len(old) and is_subsequence(new, old))
        for old, new in pairs["char_insert"]:
            assert old == new or (len(new) > len(old) and is_subsequence(old, new))
        for old, new in pairs["char_swap"]:
            assert sorted(old) == sorted(new)
        for old, new in pairs["char_substitute"]:
            assert len(old) == len(new)
            assert all(a == b or (a.isalpha() and b.isalpha()) for a, b in zip(old, new))


def test_word_level_outputs_are_made_of_the_right_words():
    synonyms = load_synonyms()
    marks = set(PUNCTUATION_MARKS)
    for i, text in enumerate(CORPUS[:80]):
        words = text.split()
        swapped = corrupt_text(text, "word_swap", 0.35, seed=0, sample_id=i).split()
        assert sorted(swapped) == sorted(words)
        deleted = corrupt_text(text, "word_deletion", 0.35, seed=0, sample_id=i).split()
        assert deleted and all(w in words for w in deleted)
        punct = corrupt_text(text, "punctuation_insertion", 0.35, seed=0, sample_id=i).split()
        assert [w for w in punct if w not in marks] == words
        replaced = corrupt_text(text, "synonym_replacement", 0.35, seed=0, sample_id=i).split()
        for old, new in zip(words, replaced):
            if old != new:
                core = old.strip(".,").lower()
                assert new.strip(".,").lower() in synonyms[core], (old, new)


def test_synonym_table_is_a_usable_caption_thesaurus():
    table = load_synonyms()
    assert len(table) >= 300
    for word, syns in table.items():
        assert word.isalpha() and word.islower(), word
        assert syns and word not in syns, word
        assert all(s.isalpha() and s.islower() for s in syns), word
    caption_words = (
        *COLOURS,
        *SHAPES,
        *("small", "large", "big", "tiny", "above", "below", "beside", "near", "inside"),
        *("around", "man", "woman", "person", "child", "dog", "cat", "horse", "bird"),
        *("car", "table", "chair", "street", "sitting", "standing", "holding", "walking"),
        *("picture", "image", "background", "shape", "object"),
    )
    missing = [w for w in caption_words if w not in table]
    assert not missing, missing


def test_edge_cases():
    assert corrupt_text("", "keyboard", 7, seed=0, sample_id=0) == ""
    assert corrupt_text("   ", "word_deletion", 0.35, seed=0, sample_id=0) == "   "
    assert corrupt_text("dog", "word_deletion", 1.0, seed=0, sample_id=0) == "dog"
    spaced = "a  red\tcircle"
    for name, seed in itertools.product(CHAR_CORRUPTIONS, range(3)):
        out = corrupt_text(spaced, name, 7, seed=seed, sample_id=0)
        assert out.count("\t") == 1 and "  " in out  # whitespace kept by character edits


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown text corruption"):
        corrupt_text("a dog", "rewrite_formal", 1, seed=0, sample_id=0)
    with pytest.raises(TypeError, match="rate"):
        corrupt_text("a dog", "word_swap", 1, seed=0, sample_id=0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        corrupt_text("a dog", "word_swap", 1.5, seed=0, sample_id=0)
    with pytest.raises(TypeError, match="int in 1..7"):
        corrupt_text("a dog", "keyboard", 0.3, seed=0, sample_id=0)
    with pytest.raises(ValueError, match="1..7"):
        corrupt_text("a dog", "keyboard", 8, seed=0, sample_id=0)
    with pytest.raises(TypeError, match="str"):
        corrupt_text(["a dog"], "keyboard", 1, seed=0, sample_id=0)
    with pytest.raises(ValueError, match="one id per text"):
        corrupt_texts(["a dog", "a cat"], "keyboard", 1, seed=0, sample_ids=[0])
    with pytest.raises(ValueError, match="non-negative"):
        corrupt_text("a dog", "keyboard", 1, seed=0, sample_id=-3)
