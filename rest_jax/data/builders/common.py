"""Pieces shared by the rest_jax TFDS builders (no TensorFlow needed).

Builders write ``array_record`` files and are read with ``builder.as_data_source()``; images are
``tfds.features.Tensor(dtype=uint8)`` (``tfds.features.Image`` would need TensorFlow), captions
a fixed-length ``Sequence(Text())``. Examples keep their generation order
(``disable_shuffling=True``), so record i of a split is image i.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

FILE_FORMAT = "array_record"


class SourceFileCodePath:
    """Mixin: a builder's ``code_path`` is its source file.

    TFDS otherwise resolves it through the top-level package's resources, which needs the
    ``importlib_resources`` backport whenever ``rest_jax`` is a namespace package.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls))


def package_version() -> str:
    """rest_jax's version: the installed distribution's, else ``rest_jax.__version__``."""
    try:
        return importlib.metadata.version("rest_jax")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        import rest_jax

        return str(getattr(rest_jax, "__version__", "unknown"))
    except ImportError:  # pragma: no cover - rest_jax is importable when this runs
        return "unknown"


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: str | None = None):
    """``download_and_prepare`` with no downloads (manual_dir for the Karpathy datasets)."""
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=config)
    return builder


_PLURAL = {
    "image": "images",
    "image_id": "image_ids",
    "filename": "filenames",
    "karpathy_id": "karpathy_ids",
}


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def read_split(builder: tfds.core.DatasetBuilder, split: str, chunk: int = 1024) -> dict[str, Any]:
    """Reads a prepared split into stacked numpy arrays (and flat caption lists).

    Returns:
      dict: every feature stacked along a new first axis, in record order, under the key
      ``synthworld.generate_split`` uses (``image`` -> ``images``, ``image_id`` ->
      ``image_ids``, ``filename`` -> ``filenames``, ``karpathy_id`` -> ``karpathy_ids``);
      ``captions`` becomes a flat image-major list[str] (length captions_per_image * N) and
      ``caption_image_ids`` int32 says which image each caption belongs to; other text
      features become lists of str.
    """
    source = builder.as_data_source(split=split)
    n = len(source)
    records: list[dict[str, Any]] = []
    for start in range(0, n, chunk):
        records.extend(source.__getitems__(list(range(start, min(n, start + chunk)))))
    if not records:
        raise ValueError(f"split {split!r} of {builder.name} is empty")
    out: dict[str, Any] = {}
    for feature in records[0]:
        values = [_decode(r[feature]) for r in records]
        key = _PLURAL.get(feature, feature)
        if isinstance(values[0], str):
            out[key] = values
        elif key == "captions":
            out[key] = [c for caps in values for c in caps]
            out["caption_image_ids"] = np.repeat(
                np.arange(n, dtype=np.int32), [len(c) for c in values]
            )
        else:
            out[key] = np.stack([np.asarray(v) for v in values])
    return out
