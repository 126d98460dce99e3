"""Shared base of the manual-directory Karpathy-split builders (COCO 5k test, Flickr30k 1k test).

docs/method.md section 8.4. The user supplies the images and Andrej Karpathy's split file
(``dataset_coco.json`` / ``dataset_flickr30k.json``)::

  {"images": [{"filename": "...jpg", "filepath": "val2014" (COCO only), "split": "test",
               "imgid": 0, "sentences": [{"raw": "A man riding a horse."}, ...]}, ...]}

The builder applies the reference preprocessing and stores it, so what is read back is what the
model sees: images resized to ``image_size`` x ``image_size`` with bicubic interpolation and no
crop, stored uint8 (CLIP's mean/std normalisation is left to the model); captions lowercased,
each of ``.!"()*#:;~`` replaced by a space, whitespace collapsed, at most 30 words; the first 5
captions of each image are kept. Records keep the order of the split file.

Splits: ``train`` = Karpathy "train" + "restval", ``validation`` = "val", ``test`` = "test".
Which of them a config builds is its ``splits`` field (validation and test by default).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from rest_jax.data.builders.common import SourceFileCodePath
from rest_jax.files import read_json

CAPTION_PUNCTUATION = '.!"()*#:;~'
_PUNCTUATION_RE = re.compile("[" + re.escape(CAPTION_PUNCTUATION) + "]")
KARPATHY_SPLITS = {"train": ("train", "restval"), "validation": ("val",), "test": ("test",)}


def preprocess_caption(raw: str, max_words: int = 30) -> str:
    """Reference caption preprocessing: lowercase, ``.!"()*#:;~`` -> space, collapse spaces,
    strip, keep the first ``max_words`` words."""
    if not isinstance(raw, str):
        raise TypeError(f"caption must be a str, got {type(raw).__name__}")
    words = _PUNCTUATION_RE.sub(" ", raw.lower()).split()
    return " ".join(words[:max_words])


def load_image(path: str, size: int) -> np.ndarray:
    """RGB uint8 [size, size, 3]: the file resized with bicubic interpolation, no crop.

    Raises:
      FileNotFoundError: no such file.
      ValueError: a file Pillow cannot decode (truncated, damaged, not an image), naming it.
    """
    try:
        with Image.open(path) as image:
            return np.asarray(
                image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), np.uint8
            )
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # Pillow: OSError for truncated data / unidentified files, SyntaxError for broken PNGs.
        raise ValueError(
            f"{path}: cannot read the image ({err}); the file may be truncated or damaged"
        ) from err


def _entry_label(path: str, index: int, entry: Any) -> str:
    name = entry.get("filename") if isinstance(entry, dict) else None
    return f"{path}: images[{index}]" + (f" ({name})" if isinstance(name, str) else "")


def _check_entry(path: str, index: int, entry: Any) -> None:
    """Raises a ValueError naming the file and the entry when a field the builder reads is
    missing or of the wrong type."""
    label = _entry_label(path, index, entry)
    if not isinstance(entry, dict):
        raise ValueError(f"{label}: expected an object, got {type(entry).__name__}")
    missing = {"filename", "split", "sentences"} - set(entry)
    if missing:
        raise ValueError(f"{label} lacks {sorted(missing)}")
    for field in ("filename", "split"):
        if not isinstance(entry[field], str):
            raise ValueError(f"{label}: '{field}' must be a string, got {entry[field]!r}")
    if entry.get("filepath") is not None and not isinstance(entry["filepath"], str):
        raise ValueError(f"{label}: 'filepath' must be a string, got {entry['filepath']!r}")
    if not isinstance(entry["sentences"], list):
        raise ValueError(f"{label}: 'sentences' must be a list")
    for j, sentence in enumerate(entry["sentences"]):
        raw = sentence.get("raw") if isinstance(sentence, dict) else None
        if not isinstance(raw, str):
            raise ValueError(f"{label}: sentences[{j}] has no 'raw' caption (a string)")


def read_karpathy_json(path: str) -> list[dict[str, Any]]:
    """The ``images`` list of a Karpathy split file (checked for the fields the builder uses).

    Raises:
      ValueError: the file is not valid JSON (truncated), or an entry lacks a field or has one
        of the wrong type; the message names the file and the entry (``images[i]`` and its
        file name).
    """
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected a JSON object with an 'images' list")
    for i, entry in enumerate(data["images"]):
        _check_entry(path, i, entry)
    return data["images"]


def manual_instructions(annotation_file: str, image_dirs: tuple[str, ...]) -> str:
    """The text TFDS shows when the manual directory is missing or incomplete."""
    return (
        f"Put {annotation_file} (Karpathy's split file) in the manual directory and the images "
        f"under one of {list(image_dirs)} there, as <dir>/<filepath>/<filename> or "
        "<dir>/<filename> (e.g. images/val2014/COCO_val2014_000000391895.jpg). Pass the "
        "directory as DownloadConfig(manual_dir=...), e.g. "
        "rest_jax.data.builders.prepare(builder, manual_dir)."
    )


@dataclasses.dataclass(eq=False)
class KarpathyConfig(tfds.core.BuilderConfig):
    """Image size, splits to build and caption settings of a Karpathy-split dataset."""

    image_size: int = 224
    splits: tuple[str, ...] = ("validation", "test")
    captions_per_image: int = 5
    max_words: int = 30


class KarpathyBuilder(SourceFileCodePath, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class: subclasses set ``name``, ``ANNOTATION_FILE`` and ``IMAGE_DIRS``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        KarpathyConfig(name="224px", description="224x224 bicubic, validation and test"),
        KarpathyConfig(
            name="224px_all",
            description="224x224 bicubic, train (+restval), validation and test",
            splits=("train", "validation", "test"),
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "224px"
    ANNOTATION_FILE = ""
    # Folders (relative to the manual dir) searched for "<filepath>/<filename>" then "<filename>".
    IMAGE_DIRS: tuple[str, ...] = ("images", ".")
    MANUAL_DOWNLOAD_INSTRUCTIONS = manual_instructions("<split file>", IMAGE_DIRS)

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        s = config.image_size
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.name}: Karpathy split, images {s}x{s} bicubic (no crop).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8),
                    "captions": tfds.features.Sequence(
                        tfds.features.Text(), length=config.captions_per_image
                    ),
                    "image_id": np.int32,
                    "karpathy_id": np.int64,
                    "filename": tfds.features.Text(),
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        try:
            manual_dir = dl_manager.manual_dir
        except AssertionError as error:  # TFDS asserts when it is missing or empty
            raise FileNotFoundError(str(error)) from None
        annotation = os.path.join(manual_dir, self.ANNOTATION_FILE)
        if not os.path.exists(annotation):
            raise FileNotFoundError(f"{annotation} not found. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        entries = read_karpathy_json(annotation)
        unknown = set(self.builder_config.splits) - set(KARPATHY_SPLITS)
        if unknown:
            raise ValueError(
                f"unknown splits {sorted(unknown)}; choose from {list(KARPATHY_SPLITS)}"
            )
        need = self.builder_config.captions_per_image
        chosen = {}
        for split in self.builder_config.splits:
            chosen[split] = []
            for i, entry in enumerate(entries):
                if entry["split"] not in KARPATHY_SPLITS[split]:
                    continue
                if len(entry["sentences"]) < need:
                    raise ValueError(
                        f"{_entry_label(annotation, i, entry)} has {len(entry['sentences'])} "
                        f"captions, need {need}"
                    )
                chosen[split].append(entry)
        return {
            split: self._generate_examples(chosen[split], str(manual_dir))
            for split in self.builder_config.splits
        }

    def _image_path(self, manual_dir: str, entry: dict[str, Any]) -> str:
        names = [entry["filename"]]
        if entry.get("filepath"):
            names.insert(0, os.path.join(entry["filepath"], entry["filename"]))
        tried = []
        for folder in self.IMAGE_DIRS:
            for name in names:
                path = os.path.join(manual_dir, folder, name)
                if os.path.exists(path):
                    return path
                tried.append(path)
        raise FileNotFoundError(f"image {entry['filename']} not found; tried {tried}")

    def _generate_examples(self, entries: list[dict[str, Any]], manual_dir: str):
        config = self.builder_config
        for index, entry in enumerate(entries):
            captions = [
                preprocess_caption(s["raw"], config.max_words)
                for s in entry["sentences"][: config.captions_per_image]
            ]
            yield (
                index,
                {
                    "image": load_image(self._image_path(manual_dir, entry), config.image_size),
                    "captions": captions,
                    "image_id": index,
                    "karpathy_id": int(entry.get("imgid", index)),
                    "filename": entry["filename"],
                },
            )
