"""Composed-retrieval splits: SynthWorld's, and FashionIQ's and CIRR's read from local files.

A :class:`ComposedSplit` is what the composed task runs on: reference images and
modification texts (the queries), a gallery of images with every query's target in it, and
the gallery index of each query's reference. Real datasets are read from a directory in
their published layouts (no download):

* FashionIQ (Wu et al., CVPR 2021): ``captions/cap.<category>.<split>.json`` (a list of
  ``{"candidate", "target", "captions": [two texts]}``), ``image_splits/split.<category>.
  <split>.json`` (the split's image names: its gallery) and ``images/<name>.png``. The
  modification text joins the two captions with " and " (as CLIP4Cir does). Every category
  present is read; their galleries are joined into one.
* CIRR (Liu et al., ICCV 2021): ``captions/cap.rc2.<split>.json`` (a list of ``{"reference",
  "target_hard", "caption"}``) and ``image_splits/split.rc2.<split>.json`` (name -> image path
  relative to the directory: its gallery).

Their test labels are hidden, so the study evaluates their public ``val`` split. Every image
is read as RGB and resized to ``size`` squared (Pillow, bicubic), so that the image
corruptions run on one uint8 array.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from rest_jax.data.synthworld import WorldConfig, composed_ceiling, generate_composed_split

COMPOSED_DATASETS = ("synthworld", "fashioniq", "cirr")


@dataclasses.dataclass(frozen=True)
class ComposedSplit:
    """Composed queries and their gallery.

    Attributes:
      gallery: uint8 (N, S, S, 3) images.
      reference_ids: (Q,) gallery index of each query's reference image.
      modifications: (Q,) modification texts.
      target_ids: (Q,) gallery index of each query's target (its one relevant item).
      ceiling: the ambiguity ceiling of R@1 (SynthWorld) or None.
    """

    gallery: np.ndarray
    reference_ids: np.ndarray
    modifications: list[str]
    target_ids: np.ndarray
    ceiling: float | None = None

    def __post_init__(self):
        q = len(self.modifications)
        if q == 0 or len(self.reference_ids) != q or len(self.target_ids) != q:
            raise ValueError(
                f"a composed split needs as many references ({len(self.reference_ids)}) and "
                f"targets ({len(self.target_ids)}) as modifications ({q}), at least one"
            )
        n = len(self.gallery)
        for name in ("reference_ids", "target_ids"):
            ids = np.asarray(getattr(self, name))
            if ids.min() < 0 or ids.max() >= n:
                raise ValueError(f"{name} must index the gallery of {n} images")

    @property
    def references(self) -> np.ndarray:
        """uint8 (Q, S, S, 3) reference images."""
        return self.gallery[self.reference_ids]

    def head(self, n: int) -> ComposedSplit:
        """The first ``n`` queries (0: all) with the whole gallery."""
        if not n or n >= len(self.modifications):
            return self
        return dataclasses.replace(
            self,
            reference_ids=self.reference_ids[:n],
            modifications=self.modifications[:n],
            target_ids=self.target_ids[:n],
        )


def synthworld_split(world: WorldConfig, split: str, seed: int = 0, n: int | None = None):
    """A composed split of the world (``generate_composed_split``) with its ceiling."""
    raw = generate_composed_split(world, split, seed, n)
    return ComposedSplit(
        gallery=raw["images"],
        reference_ids=np.asarray(raw["reference_ids"]),
        modifications=list(raw["modifications"]),
        target_ids=np.asarray(raw["target_ids"]),
        ceiling=composed_ceiling(raw),
    )


def _read_json(path: pathlib.Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    return json.loads(path.read_text())


def _load_images(paths: list[pathlib.Path], size: int) -> np.ndarray:
    from PIL import Image

    out = np.zeros((len(paths), size, size, 3), np.uint8)
    for i, path in enumerate(paths):
        if not path.is_file():
            raise FileNotFoundError(f"image {path} not found")
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
            out[i] = np.asarray(rgb)
    return out


def _assemble(gallery_paths: dict[str, pathlib.Path], triples, size: int) -> ComposedSplit:
    names = list(gallery_paths)
    index = {name: i for i, name in enumerate(names)}
    for reference, target, _ in triples:
        for name in (reference, target):
            if name not in index:
                raise ValueError(f"image {name!r} of a query is not in the split's gallery")
    return ComposedSplit(
        gallery=_load_images([gallery_paths[n] for n in names], size),
        reference_ids=np.array([index[r] for r, _, _ in triples], np.int64),
        modifications=[m for _, _, m in triples],
        target_ids=np.array([index[t] for _, t, _ in triples], np.int64),
    )


def read_fashioniq(directory: str | pathlib.Path, split: str, size: int) -> ComposedSplit:
    """FashionIQ's ``split`` (every category present; layout in the module docstring).

    Raises:
      FileNotFoundError: no ``captions/cap.<category>.<split>.json``, or a file it names.
    """
    root = pathlib.Path(directory)
    files = sorted((root / "captions").glob(f"cap.*.{split}.json"))
    if not files:
        raise FileNotFoundError(
            f"{root / 'captions'}: no cap.<category>.{split}.json (FashionIQ's layout: "
            "captions/, image_splits/, images/)"
        )
    gallery: dict[str, pathlib.Path] = {}
    triples = []
    for file in files:
        category = file.name.split(".")[1]
        for name in _read_json(root / "image_splits" / f"split.{category}.{split}.json"):
            gallery.setdefault(name, root / "images" / f"{name}.png")
        for entry in _read_json(file):
            text = " and ".join(c.strip().rstrip(".") for c in entry["captions"])
            triples.append((entry["candidate"], entry["target"], text))
    return _assemble(gallery, triples, size)


def read_cirr(directory: str | pathlib.Path, split: str, size: int) -> ComposedSplit:
    """CIRR's ``split`` (layout in the module docstring).

    Raises:
      FileNotFoundError: ``captions/cap.rc2.<split>.json``, its image split, or an image is
        missing.
    """
    root = pathlib.Path(directory)
    names = _read_json(root / "image_splits" / f"split.rc2.{split}.json")
    gallery = {name: root / path for name, path in names.items()}
    triples = [
        (e["reference"], e["target_hard"], e["caption"])
        for e in _read_json(root / "captions" / f"cap.rc2.{split}.json")
    ]
    return _assemble(gallery, triples, size)


def read_composed(dataset: str, directory, split: str, size: int) -> ComposedSplit:
    """``read_fashioniq`` or ``read_cirr`` by name."""
    readers = {"fashioniq": read_fashioniq, "cirr": read_cirr}
    if dataset not in readers:
        raise ValueError(f"unknown composed dataset {dataset!r}; expected fashioniq or cirr")
    return readers[dataset](directory, split, size)
