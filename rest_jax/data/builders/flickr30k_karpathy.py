"""Flickr30k, Karpathy split (1,000 test images, 5,000 captions), from a manual directory.

Manual directory: ``dataset_flickr30k.json`` and the images as ``images/<filename>`` or
``flickr30k-images/<filename>``. See ``rest_jax.data.builders.karpathy`` for the preprocessing
and the splits.
"""

from __future__ import annotations

from rest_jax.data.builders.karpathy import KarpathyBuilder, manual_instructions


class Flickr30kKarpathy(KarpathyBuilder):
    """Flickr30k Karpathy split (test: 1k images x 5 captions)."""

    name = "flickr30k_karpathy"
    ANNOTATION_FILE = "dataset_flickr30k.json"
    IMAGE_DIRS = ("images", "flickr30k-images", ".")
    MANUAL_DOWNLOAD_INSTRUCTIONS = manual_instructions(ANNOTATION_FILE, IMAGE_DIRS)
