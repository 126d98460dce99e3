"""The world's shipped models: a small CLIP two-tower and the composed-query combiner, each
trained once and stored with its hash.

A directory in Hugging Face CLIP layout plus the world's files:

  ``config.json``        the CLIP configuration (Hugging Face keys, read by ``load_clip``);
  ``model.safetensors``  the weights (Hugging Face names, float32);
  ``tokenizer.json``     the world's subword tokenizer (``rest_jax.data.subword``);
  ``training.json``      how it was trained: world, model, augmentation, schedule, time,
                         final loss and the validation split's clean R@1.

:data:`WORLD_SOURCE_SHA256` pins the content of each file, so that every machine starts from
the same model. ``python -m experiments.train_source`` retrains it (see the README) and
prints the new hashes.

The combiner (``assets/world_combiner``, :data:`WORLD_COMBINER_SHA256`) composes the source
model's image and text features into composed-query embeddings (``rest_jax.models.combiner``);
``python -m experiments.train_combiner`` retrains it.

The audio-visual source model (``assets/av_source``, :data:`AV_SOURCE_SHA256`) is the video
and audio two-tower of ``rest_jax.models.audio_visual`` trained on AVWorld
(``rest_jax.data.avworld``); ``python -m experiments.train_av_source`` retrains it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Any

import jax
import numpy as np

from rest_jax.data.subword import SubwordTokenizer
from rest_jax.models.audio_visual import AVConfig
from rest_jax.models.clip import ClipConfig
from rest_jax.models.combiner import CombinerConfig
from rest_jax.models.hf import flax_to_hf, load_clip
from rest_jax.selection import path_to_str

PyTree = Any

WORLD_SOURCE_DIR = pathlib.Path(__file__).parent / "assets" / "world_source"
WORLD_SOURCE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "training.json")
WORLD_SOURCE_SHA256: dict[str, str] = {
    "config.json": "8ca2b82385ab5ded2df73411b67413fb17f4d197f622b4c5a7c0ba929e2618c2",
    "model.safetensors": "324b10987e9495e35f866a89bc128ed094781bbe8ed2fb8de0c92a1b5ad6d894",
    "tokenizer.json": "d9e79024abe5961f3515ea1fb09ebdaf8d7f6da875e7c77632e19a2bac8ee03e",
    "training.json": "fe1fc236c05fedf3ad4b29af7428e4fb848c3fc45716aeeaaaad4de7f1bda110",
}


@dataclasses.dataclass(frozen=True)
class WorldSource:
    """The loaded source model: CLIP config, parameters, tokenizer and training record."""

    config: ClipConfig
    params: PyTree
    tokenizer: SubwordTokenizer
    training: dict[str, Any]
    directory: pathlib.Path


def file_sha256(path: str | pathlib.Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(directory: str | pathlib.Path, expected: dict[str, str]) -> None:
    """Checks that every file of ``expected`` is in ``directory`` with that SHA-256.

    Raises:
      FileNotFoundError: a file is missing (named).
      ValueError: a file's content differs from its hash (named, with both hashes).
    """
    directory = pathlib.Path(directory)
    for name, want in sorted(expected.items()):
        path = directory / name
        if not path.exists():
            raise FileNotFoundError(f"source model file missing: {path}")
        got = file_sha256(path)
        if got != want:
            raise ValueError(
                f"{path} does not match its pinned SHA-256 (expected {want}, got {got}): "
                "restore it (git checkout) or retrain with python -m experiments.train_source "
                "and use the new directory explicitly"
            )


def save_world_source(
    directory: str | pathlib.Path,
    config: ClipConfig,
    params: PyTree,
    tokenizer: SubwordTokenizer,
    training: dict[str, Any],
) -> dict[str, str]:
    """Writes the four files of a source-model directory; returns their SHA-256."""
    from safetensors.numpy import save_file

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(
        json.dumps(config.to_hf_dict(), indent=1, sort_keys=True) + "\n"
    )
    weights = {k: np.array(v, np.float32, order="C") for k, v in flax_to_hf(params, config).items()}
    save_file(dict(sorted(weights.items())), str(directory / "model.safetensors"))
    tokenizer.save(directory / "tokenizer.json")
    (directory / "training.json").write_text(json.dumps(training, indent=1, sort_keys=True) + "\n")
    return {name: file_sha256(directory / name) for name in WORLD_SOURCE_FILES}


def checked_directory(
    directory: str | pathlib.Path | None,
    expected: dict[str, str] | None,
    shipped_dir: pathlib.Path,
    shipped_sha256: dict[str, str],
    files: tuple[str, ...],
    what: str,
    writer: str,
) -> pathlib.Path:
    """The directory to load (``None``: the shipped one), after checking that it holds
    ``files`` and, when hashes are expected, that they match (``None``: the shipped pins
    for the shipped directory, no check for another one).

    Raises:
      FileNotFoundError: a file is missing (naming ``python -m writer``). ValueError: a hash
        differs.
    """
    shipped = directory is None
    directory = pathlib.Path(shipped_dir if shipped else directory)
    if expected is None and shipped:
        expected = shipped_sha256
    for name in files:
        if not (directory / name).exists():
            raise FileNotFoundError(
                f"{what} file missing: {directory / name} (the {what} directory holds "
                f"{', '.join(files)}; python -m {writer} writes one)"
            )
    if expected:
        verify(directory, expected)
    return directory


def load_world_source(
    directory: str | pathlib.Path | None = None, expected: dict[str, str] | None = None
) -> WorldSource:
    """Loads a source-model directory, checking its files' hashes first.

    Args:
      directory: the directory; ``None`` is the shipped model (``WORLD_SOURCE_DIR``).
      expected: file name -> SHA-256; ``None`` is :data:`WORLD_SOURCE_SHA256` for the shipped
        model and no check for another directory (a model you retrained yourself).
    """
    directory = checked_directory(
        directory, expected, WORLD_SOURCE_DIR, WORLD_SOURCE_SHA256, WORLD_SOURCE_FILES,
        what="source model", writer="experiments.train_source",
    )  # fmt: skip
    config, params, _ = load_clip(directory)
    tokenizer = SubwordTokenizer.from_file(directory / "tokenizer.json")
    training = json.loads((directory / "training.json").read_text())
    return WorldSource(config, params, tokenizer, training, directory)


# ----------------------------------------------------------------------------- the combiner

WORLD_COMBINER_DIR = pathlib.Path(__file__).parent / "assets" / "world_combiner"
WORLD_COMBINER_FILES = ("config.json", "model.safetensors", "training.json")
WORLD_COMBINER_SHA256: dict[str, str] = {
    "config.json": "72976272bdf14f06aa1d2889938adf7c5505dba9dadef682021f2559ba82049a",
    "model.safetensors": "d3d0abf32a10f1372fa527baadcbd1bc80720d2c2fea71a13c53c6decc6439e5",
    "training.json": "74886133aadfd8db62eeef6ac96923873c96471c796e10ee3869cb1f81937ee5",
}


@dataclasses.dataclass(frozen=True)
class WorldCombiner:
    """The loaded composed-query combiner: its config, parameters and training record."""

    config: CombinerConfig
    params: PyTree
    training: dict[str, Any]
    directory: pathlib.Path


def save_flat_model(
    directory: str | pathlib.Path,
    config: dict[str, Any],
    params: PyTree,
    training: dict[str, Any],
    files: tuple[str, ...],
) -> dict[str, str]:
    """Writes a model directory (``config.json`` from ``config``, ``model.safetensors`` with
    ``/``-joined parameter paths, ``training.json``); returns the SHA-256 of ``files``."""
    from safetensors.numpy import save_file

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    flat = {
        path_to_str(path): np.array(leaf, np.float32, order="C")
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }
    save_file(dict(sorted(flat.items())), str(directory / "model.safetensors"))
    (directory / "training.json").write_text(json.dumps(training, indent=1, sort_keys=True) + "\n")
    return {name: file_sha256(directory / name) for name in files}


def load_flat_params(directory: pathlib.Path, template: PyTree, config: Any) -> PyTree:
    """The parameters of ``directory/model.safetensors`` in the tree of ``template`` (shapes).

    Raises:
      ValueError: the weights do not fit ``config`` (a missing or extra tensor, a wrong shape).
    """
    from safetensors.numpy import load_file

    flat = load_file(str(directory / "model.safetensors"))
    want = {
        path_to_str(path): leaf.shape
        for path, leaf in jax.tree_util.tree_leaves_with_path(template)
    }
    got = {k: v.shape for k, v in flat.items()}
    if want != got:
        raise ValueError(
            f"{directory / 'model.safetensors'} does not fit {config}: missing "
            f"{sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))}, shapes "
            f"{ {k: (got[k], want[k]) for k in set(want) & set(got) if got[k] != want[k]} }"
        )
    return jax.tree_util.tree_map_with_path(lambda p, _: flat[path_to_str(p)], template)


def save_world_combiner(
    directory: str | pathlib.Path,
    config: CombinerConfig,
    params: PyTree,
    training: dict[str, Any],
) -> dict[str, str]:
    """Writes a combiner directory (:func:`save_flat_model`); returns the files' SHA-256."""
    return save_flat_model(
        directory, dataclasses.asdict(config), params, training, WORLD_COMBINER_FILES
    )


def load_world_combiner(
    directory: str | pathlib.Path | None = None, expected: dict[str, str] | None = None
) -> WorldCombiner:
    """Loads a combiner directory, checking its files' hashes first.

    Args:
      directory: the directory; ``None`` is the shipped combiner (``WORLD_COMBINER_DIR``).
      expected: file name -> SHA-256; ``None`` is :data:`WORLD_COMBINER_SHA256` for the
        shipped combiner and no check for another directory.

    Raises:
      FileNotFoundError: a file is missing. ValueError: a hash differs, or the weights do not
        fit the configuration (a missing or extra tensor, a wrong shape).
    """
    from rest_jax.models.combiner import init_combiner

    directory = checked_directory(
        directory, expected, WORLD_COMBINER_DIR, WORLD_COMBINER_SHA256, WORLD_COMBINER_FILES,
        what="combiner", writer="experiments.train_combiner",
    )  # fmt: skip
    config = CombinerConfig(**json.loads((directory / "config.json").read_text()))
    template = jax.eval_shape(lambda: init_combiner(config))
    params = load_flat_params(directory, template, config)
    training = json.loads((directory / "training.json").read_text())
    return WorldCombiner(config, params, training, directory)


# ----------------------------------------------------------------------------- the AV source

AV_SOURCE_DIR = pathlib.Path(__file__).parent / "assets" / "av_source"
AV_SOURCE_FILES = ("config.json", "model.safetensors", "training.json")
AV_SOURCE_SHA256: dict[str, str] = {
    "config.json": "68daafe10dad7f3ffa05273e3f21f63c56190e16d7106b197bfa6b34bb8a1968",
    "model.safetensors": "c7113f7080392a293ebff1f4d9b3fc202929f9c81846d3660584412977a4647e",
    "training.json": "34f6c0211780ebcb2f3a3baf7626ec994c6b99f8425c8b7d69ad5c4c1599a20a",
}


@dataclasses.dataclass(frozen=True)
class AVSource:
    """The loaded audio-visual source model: its config, parameters and training record."""

    config: AVConfig
    params: PyTree
    training: dict[str, Any]
    directory: pathlib.Path


def save_av_source(
    directory: str | pathlib.Path, config: AVConfig, params: PyTree, training: dict[str, Any]
) -> dict[str, str]:
    """Writes an audio-visual source directory (:func:`save_flat_model`); returns the files'
    SHA-256."""
    return save_flat_model(directory, config.to_dict(), params, training, AV_SOURCE_FILES)


def load_av_source(
    directory: str | pathlib.Path | None = None, expected: dict[str, str] | None = None
) -> AVSource:
    """Loads an audio-visual source directory, checking its files' hashes first.

    Args:
      directory: the directory; ``None`` is the shipped model (``AV_SOURCE_DIR``).
      expected: file name -> SHA-256; ``None`` is :data:`AV_SOURCE_SHA256` for the shipped
        model and no check for another directory.

    Raises:
      FileNotFoundError: a file is missing. ValueError: a hash differs, or the weights do not
        fit the configuration.
    """
    from rest_jax.models.audio_visual import AudioVisualModel

    directory = checked_directory(
        directory, expected, AV_SOURCE_DIR, AV_SOURCE_SHA256, AV_SOURCE_FILES,
        what="audio-visual source model", writer="experiments.train_av_source",
    )  # fmt: skip
    config = AVConfig.from_dict(json.loads((directory / "config.json").read_text()))
    template = jax.eval_shape(AudioVisualModel(config).init, jax.random.key(0))
    params = load_flat_params(directory, template, config)
    training = json.loads((directory / "training.json").read_text())
    return AVSource(config, params, training, directory)
