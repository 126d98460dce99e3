"""TFDS builders (no TensorFlow) and corrupted-split manifests."""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

from rest_jax.data import synthworld as sw
from rest_jax.data.builders import (
    CocoKarpathy,
    Flickr30kKarpathy,
    KarpathyConfig,
    SynthWorld,
    array_sha256,
    prepare,
    preprocess_caption,
    read_corrupted_split,
    read_split,
    texts_sha256,
    write_corrupted_split,
)
from rest_jax.data.builders.synthworld import synthworld_config

TINY_COUNTS = {"n_train": 6, "n_validation": 3, "n_test": 4}


def _build_synthworld(data_dir, seed=0, **world):
    config = synthworld_config(image_size=32, seed=seed, **{**TINY_COUNTS, **world})
    return prepare(SynthWorld(config=config, data_dir=str(data_dir)))


def _record_files(builder) -> dict[str, str]:
    root = pathlib.Path(builder.data_dir)
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.glob("*.array_record*"))
    }


@pytest.fixture(scope="module")
def synth_builder(tmp_path_factory):
    return _build_synthworld(tmp_path_factory.mktemp("sw_a"))


def test_synthworld_builds_the_splits_and_reads_back_without_tensorflow(synth_builder):
    counts = {name: info.num_examples for name, info in synth_builder.info.splits.items()}
    assert counts == {"train": 6, "validation": 3, "test": 4}
    world = synth_builder.builder_config.world
    for split in ("train", "validation", "test"):
        data = read_split(synth_builder, split)
        expected = sw.generate_split(world, split, seed=0)
        np.testing.assert_array_equal(data["images"], expected["images"])
        assert data["images"].dtype == np.uint8
        assert data["captions"] == expected["captions"]
        np.testing.assert_array_equal(data["caption_image_ids"], expected["caption_image_ids"])
        np.testing.assert_array_equal(data["image_ids"], expected["image_ids"])
        for key in sw.SCENE_KEYS:
            np.testing.assert_array_equal(data[key], expected[key], err_msg=key)
        for key in sw.CAPTION_KEYS:
            np.testing.assert_array_equal(
                data[key].reshape(expected[key].shape), expected[key], err_msg=key
            )
    assert "tensorflow" not in sys.modules


def test_synthworld_builds_are_reproducible(synth_builder, tmp_path):
    again = _build_synthworld(tmp_path / "b")
    files = _record_files(synth_builder)
    assert len(files) == 3 and files == _record_files(again)
    other = _build_synthworld(tmp_path / "c", seed=1)
    assert read_split(other, "test")["captions"] != read_split(again, "test")["captions"]


def test_synthworld_default_configs_have_the_benchmark_counts(tmp_path):
    for name, size in (("32px", 32), ("64px", 64)):
        builder = SynthWorld(config=name, data_dir=str(tmp_path))
        world = builder.builder_config.world
        assert (world.n_train, world.n_validation, world.n_test) == (10_000, 1_000, 1_000)
        assert world.captions_per_image == 5 and world.image_size == size
        assert builder.info.features["image"].shape == (size, size, 3)
        assert builder.info.features["image"].np_dtype == np.uint8


# ----------------------------------------------------------------------------------------------
# Karpathy builders on a fixture directory.

RAW = [
    'A Dog (brown) runs: fast!! on the "grass".',
    "Two cats; one ~ sleeping*",
    "a #tag and commas, stay",
    " ".join(f"w{i}" for i in range(40)),
    "Fifth caption.",
    "Sixth caption is dropped.",
]


def _write_fixture(root: pathlib.Path, annotation: str, image_dir: str, coco: bool):
    rng = np.random.default_rng(0)
    entries, sizes = [], [(40, 30), (20, 50), (33, 33), (64, 48), (25, 25)]
    splits = ["test", "val", "test", "train", "restval"]
    for i, ((w, h), split) in enumerate(zip(sizes, splits)):
        folder = root / image_dir / ("val2014" if coco else "")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"img_{i}.jpg" if coco else f"{1000 + i}.png"
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
        entry = {"filename": name, "split": split, "imgid": 10 + i}
        entry["sentences"] = [{"raw": f"{r} {i}" if j == 4 else r} for j, r in enumerate(RAW)]
        if coco:
            entry["filepath"] = "val2014"
        entries.append(entry)
    (root / annotation).write_text(json.dumps({"images": entries, "dataset": "x"}))
    return entries


def test_caption_preprocessing_follows_the_reference():
    assert preprocess_caption(RAW[0]) == "a dog brown runs fast on the grass"
    assert preprocess_caption(RAW[1]) == "two cats one sleeping"
    assert preprocess_caption(RAW[2]) == "a tag and commas, stay"
    assert preprocess_caption(RAW[3]).split() == [f"w{i}" for i in range(30)]
    assert preprocess_caption(RAW[3], max_words=3) == "w0 w1 w2"


@pytest.mark.parametrize(
    "builder_cls, annotation, image_dir, coco",
    [
        (CocoKarpathy, "dataset_coco.json", "images", True),
        (Flickr30kKarpathy, "dataset_flickr30k.json", "flickr30k-images", False),
    ],
)
def test_karpathy_builder_on_a_fixture(tmp_path, builder_cls, annotation, image_dir, coco):
    manual = tmp_path / "manual"
    entries = _write_fixture(manual, annotation, image_dir, coco)
    config = KarpathyConfig(name="tiny", image_size=16, splits=("train", "validation", "test"))
    builder = prepare(builder_cls(config=config, data_dir=str(tmp_path / "data")), str(manual))
    counts = {name: info.num_examples for name, info in builder.info.splits.items()}
    assert counts == {"train": 2, "validation": 1, "test": 2}
    test = read_split(builder, "test")
    test_entries = [e for e in entries if e["split"] == "test"]
    assert test["filenames"] == [e["filename"] for e in test_entries]
    np.testing.assert_array_equal(test["karpathy_ids"], [e["imgid"] for e in test_entries])
    assert test["images"].shape == (2, 16, 16, 3) and test["images"].dtype == np.uint8
    for k, entry in enumerate(test_entries):
        path = manual / image_dir / entry.get("filepath", "") / entry["filename"]
        with Image.open(path) as img:
            expected = np.asarray(img.convert("RGB").resize((16, 16), Image.Resampling.BICUBIC))
        np.testing.assert_array_equal(test["images"][k], expected)
        captions = test["captions"][5 * k : 5 * k + 5]
        assert captions == [preprocess_caption(s["raw"]) for s in entry["sentences"][:5]]
    assert len(test["captions"]) == 10
    np.testing.assert_array_equal(test["caption_image_ids"], np.repeat([0, 1], 5))
    train = read_split(builder, "train")
    assert train["filenames"] == [entries[3]["filename"], entries[4]["filename"]]


def test_karpathy_builder_reports_missing_files(tmp_path):
    manual = tmp_path / "manual"
    entries = _write_fixture(manual, "dataset_flickr30k.json", "images", False)
    (manual / "images" / entries[0]["filename"]).unlink()
    config = KarpathyConfig(name="tiny_test", image_size=8, splits=("test",))
    builder = Flickr30kKarpathy(config=config, data_dir=str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match=entries[0]["filename"]):
        prepare(builder, str(manual))
    empty = tmp_path / "empty"
    empty.mkdir()
    builder = Flickr30kKarpathy(config=config, data_dir=str(tmp_path / "data2"))
    with pytest.raises(FileNotFoundError, match="does not exist or is empty"):
        prepare(builder, str(empty))
    (empty / "readme.txt").write_text("no split file here")
    with pytest.raises(FileNotFoundError, match="dataset_flickr30k.json"):
        prepare(builder, str(empty))


def test_karpathy_builder_needs_five_captions(tmp_path):
    manual = tmp_path / "manual"
    entries = _write_fixture(manual, "dataset_flickr30k.json", "images", False)
    entries[0]["sentences"] = entries[0]["sentences"][:3]
    (manual / "dataset_flickr30k.json").write_text(json.dumps({"images": entries}))
    config = KarpathyConfig(name="tiny_test", image_size=8, splits=("test",))
    builder = Flickr30kKarpathy(config=config, data_dir=str(tmp_path / "data"))
    with pytest.raises(ValueError, match="3 captions") as err:
        prepare(builder, str(manual))
    assert f"{manual / 'dataset_flickr30k.json'}: images[0] (1000.png)" in str(err.value)


def test_karpathy_builder_names_damaged_files_and_entries(tmp_path):
    manual = tmp_path / "manual"
    entries = _write_fixture(manual, "dataset_coco.json", "images", True)
    config = KarpathyConfig(name="tiny_test", image_size=8, splits=("test",))
    annotation = manual / "dataset_coco.json"
    intact = annotation.read_text()

    def prepare_fails(name, error=ValueError):
        builder = CocoKarpathy(config=config, data_dir=str(tmp_path / name))
        with pytest.raises(error) as err:
            prepare(builder, str(manual))
        return str(err.value)

    annotation.write_text(intact[: len(intact) // 2])  # truncated JSON
    message = prepare_fails("truncated_json")
    assert f"{annotation}: not valid JSON" in message
    entries[2]["sentences"][1] = {"text": "no raw field"}
    annotation.write_text(json.dumps({"images": entries}))
    message = prepare_fails("no_raw")
    assert f"{annotation}: images[2] (img_2.jpg): sentences[1] has no 'raw' caption" in message
    entries[2]["sentences"][1] = {"raw": "back"}
    annotation.write_text(json.dumps({"images": entries}))
    image = manual / "images" / "val2014" / entries[2]["filename"]
    image.write_bytes(image.read_bytes()[:300])  # truncated JPEG
    message = prepare_fails("truncated_image")
    assert f"{image}: cannot read the image" in message


# ----------------------------------------------------------------------------------------------
# Corrupted versions.


def test_corrupted_image_split_manifest_is_reproducible(tmp_path):
    pytest.importorskip("rest_jax.data.image_corruptions")
    images = sw.generate_split(sw.WorldConfig(n_test=6), "test", seed=0)["images"]
    kwargs = dict(dataset="synthworld", split="test", modality="image", corruption="gaussian_noise")
    first = write_corrupted_split(images, severity=3, seed=0, out_dir=str(tmp_path / "a"), **kwargs)
    second = write_corrupted_split(
        images, severity=3, seed=0, out_dir=str(tmp_path / "b"), **kwargs
    )
    files_a = (pathlib.Path(first["path"]) / "manifest.json").read_bytes()
    files_b = (pathlib.Path(second["path"]) / "manifest.json").read_bytes()
    assert files_a == files_b
    queries, manifest = read_corrupted_split(first["path"])
    assert manifest["sha256"] == array_sha256(queries) == first["sha256"]
    assert manifest["clean_sha256"] == array_sha256(images)
    assert manifest["sample_ids"] == list(range(6)) and manifest["severity"] == 3
    assert manifest["seed"] == 0 and manifest["corruption"] == "gaussian_noise"
    assert "rest_jax" in manifest["versions"] and "numpy" in manifest["versions"]
    assert not np.array_equal(queries, images)
    other = write_corrupted_split(images, severity=3, seed=1, out_dir=str(tmp_path / "a"), **kwargs)
    assert other["sha256"] != first["sha256"]
    # A tampered file fails verification.
    np.save(pathlib.Path(first["path"]) / "queries.npy", images)
    with pytest.raises(ValueError, match="does not match"):
        read_corrupted_split(first["path"])


def test_corrupted_text_split_manifest_is_reproducible(tmp_path):
    tc = pytest.importorskip("rest_jax.data.text_corruptions")
    captions = sw.generate_split(sw.WorldConfig(n_test=4), "test", seed=0)["captions"]
    name = tc.CHAR_CORRUPTIONS[0]
    kwargs = dict(dataset="synthworld", split="test", modality="text", corruption=name)
    first = write_corrupted_split(
        captions, severity=5, seed=0, out_dir=str(tmp_path / "a"), **kwargs
    )
    second = write_corrupted_split(
        captions, severity=5, seed=0, out_dir=str(tmp_path / "b"), **kwargs
    )
    assert {k: v for k, v in first.items() if k != "path"} == {
        k: v for k, v in second.items() if k != "path"
    }
    texts, manifest = read_corrupted_split(first["path"])
    assert manifest["sha256"] == texts_sha256(texts) and manifest["level"] == 5
    assert len(texts) == len(captions) and texts != captions
    word = next(n for n in tc.TEXT_CORRUPTIONS if n not in tc.CHAR_CORRUPTIONS)
    rate = write_corrupted_split(
        captions, **{**kwargs, "corruption": word}, severity=0.3, seed=0, out_dir=str(tmp_path)
    )
    assert rate["level"] == 0.3 and read_corrupted_split(rate["path"])[1]["level"] == 0.3


def test_checksums_see_dtype_shape_and_order():
    a = np.arange(6, dtype=np.uint8)
    assert array_sha256(a) != array_sha256(a.reshape(2, 3))
    assert array_sha256(a) != array_sha256(a.astype(np.int16))
    assert texts_sha256(["ab", "c"]) != texts_sha256(["a", "bc"])
    with pytest.raises(ValueError, match="modality"):
        write_corrupted_split(
            a,
            dataset="d",
            split="s",
            modality="audio",
            corruption="x",
            severity=1,
            seed=0,
            out_dir="unused",
        )
