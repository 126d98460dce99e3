"""TFDS builders (array_record, read without TensorFlow) and corrupted-version writers."""

from rest_jax.data.builders.coco_karpathy import CocoKarpathy
from rest_jax.data.builders.common import package_version, prepare, read_split
from rest_jax.data.builders.corrupted import (
    array_sha256,
    corrupt_queries,
    read_corrupted_split,
    texts_sha256,
    write_corrupted_split,
)
from rest_jax.data.builders.flickr30k_karpathy import Flickr30kKarpathy
from rest_jax.data.builders.karpathy import (
    KarpathyBuilder,
    KarpathyConfig,
    load_image,
    preprocess_caption,
    read_karpathy_json,
)
from rest_jax.data.builders.synthworld import SynthWorld, SynthWorldConfig

__all__ = [
    "CocoKarpathy",
    "Flickr30kKarpathy",
    "KarpathyBuilder",
    "KarpathyConfig",
    "SynthWorld",
    "SynthWorldConfig",
    "array_sha256",
    "corrupt_queries",
    "load_image",
    "package_version",
    "prepare",
    "preprocess_caption",
    "read_corrupted_split",
    "read_karpathy_json",
    "read_split",
    "texts_sha256",
    "write_corrupted_split",
]
