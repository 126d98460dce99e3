"""TFDS builder of the synthetic image-caption world (docs/method.md section 8.3).

One record per image: the image (uint8 tensor), its 5 captions, its id, its scene attributes
and what each caption says (see ``rest_jax.data.synthworld``). Splits train / validation / test
with the sizes of the config's ``WorldConfig`` (10,000 / 1,000 / 1,000 images by default).

Usage (no TensorFlow needed)::

  builder = SynthWorld(config="32px", data_dir=path)
  prepare(builder)
  test = read_split(builder, "test")   # dict like synthworld.generate_split's

A custom world: ``SynthWorld(config=synthworld_config(image_size=64, seed=3, n_train=500))``.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow_datasets as tfds

from rest_jax.data import synthworld as sw
from rest_jax.data.builders.common import SourceFileCodePath

_TEXT_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


@dataclasses.dataclass(eq=False)
class SynthWorldConfig(tfds.core.BuilderConfig):
    """A world (its knobs) and the seed of its splits."""

    world: sw.WorldConfig = dataclasses.field(default_factory=sw.WorldConfig)
    seed: int = 0


def synthworld_config(image_size: int = 32, seed: int = 0, name: str | None = None, **world):
    """A SynthWorldConfig named after its settings (e.g. ``64px_seed3``; extra knobs go into
    the name as ``key-value`` pairs so that different worlds never share a directory)."""
    world_config = sw.WorldConfig(image_size=image_size, **world)
    if name is None:
        extras = "".join(f"_{k}-{v}" for k, v in sorted(world.items()))
        name = re.sub(r"[^A-Za-z0-9_.-]", "", f"{image_size}px_seed{seed}{extras}")
    return SynthWorldConfig(
        name=name,
        description=f"SynthWorld {image_size}x{image_size}, seed {seed}, {world or 'defaults'}",
        world=world_config,
        seed=seed,
    )


class SynthWorld(SourceFileCodePath, tfds.core.GeneratorBasedBuilder):
    """SynthWorld image-caption dataset (generated, nothing to download)."""

    name = "synthworld"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        SynthWorldConfig(name="32px", description="32x32 images, seed 0", world=sw.WorldConfig()),
        SynthWorldConfig(
            name="64px", description="64x64 images, seed 0", world=sw.WorldConfig(image_size=64)
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "32px"

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    @property
    def world(self) -> sw.WorldConfig:
        return self.builder_config.world

    def _info(self) -> tfds.core.DatasetInfo:
        w = self.world
        s, m, c, k = w.image_size, w.max_slots, w.captions_per_image, sw.MAX_MENTIONS
        int_m = tfds.features.Tensor(shape=(m,), dtype=np.int32)
        float_m = tfds.features.Tensor(shape=(m,), dtype=np.float32)
        features = {
            "image": tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8),
            "captions": tfds.features.Sequence(tfds.features.Text(), length=c),
            "image_id": np.int32,
            "n_objects": np.int32,
            "object_valid": tfds.features.Tensor(shape=(m,), dtype=np.bool_),
            "object_mentionable": tfds.features.Tensor(shape=(m,), dtype=np.bool_),
            "object_shape": int_m,
            "object_colour": int_m,
            "object_size": int_m,
            "object_x": float_m,
            "object_y": float_m,
            "object_radius": float_m,
            "object_angle": float_m,
            "object_rgb": tfds.features.Tensor(shape=(m, 3), dtype=np.float32),
            "object_container": int_m,
            "background_kind": np.int32,
            "background_tone": np.int32,
            "background_rgb": tfds.features.Tensor(shape=(3,), dtype=np.float32),
            "background_angle": np.float32,
            "background_period": np.float32,
            "noise_seed": np.int64,
            "caption_objects": tfds.features.Tensor(shape=(c, k), dtype=np.int32),
            "caption_says_shape": tfds.features.Tensor(shape=(c, k), dtype=np.bool_),
            "caption_says_colour": tfds.features.Tensor(shape=(c, k), dtype=np.bool_),
            "caption_says_size": tfds.features.Tensor(shape=(c, k), dtype=np.bool_),
            "caption_says_position": tfds.features.Tensor(shape=(c, k), dtype=np.bool_),
            "caption_relation": tfds.features.Tensor(shape=(c,), dtype=np.int32),
            "caption_count": tfds.features.Tensor(shape=(c,), dtype=np.int32),
            "caption_says_background_kind": tfds.features.Tensor(shape=(c,), dtype=np.bool_),
            "caption_says_background_tone": tfds.features.Tensor(shape=(c,), dtype=np.bool_),
        }
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict(features),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(world=w.to_dict(), seed=self.builder_config.seed),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {name: self._generate_examples(split) for name, split in _TEXT_SPLITS.items()}

    def _generate_examples(self, split: str):
        data = sw.generate_split(self.world, split, self.builder_config.seed)
        c = self.world.captions_per_image
        per_caption = [k for k in sw.CAPTION_KEYS if k != "caption_image_ids"]
        for i in range(len(data["image_ids"])):
            record = {key: data[key][i] for key in sw.SCENE_KEYS}
            record["noise_seed"] = np.int64(record["noise_seed"])
            record.update({key: data[key][c * i : c * (i + 1)] for key in per_caption})
            record["image"] = data["images"][i]
            record["image_id"] = data["image_ids"][i]
            record["captions"] = data["captions"][c * i : c * (i + 1)]
            yield int(i), record
