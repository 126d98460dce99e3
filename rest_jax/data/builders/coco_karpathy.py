"""COCO captions, Karpathy split (5,000 test images, 25,000 captions), from a manual directory.

Manual directory: ``dataset_coco.json`` and the COCO 2014 images as
``images/val2014/<filename>`` (or ``val2014/<filename>``, ``train2014/...``). See
``rest_jax.data.builders.karpathy`` for the preprocessing and the splits.
"""

from __future__ import annotations

from rest_jax.data.builders.karpathy import KarpathyBuilder, manual_instructions


class CocoKarpathy(KarpathyBuilder):
    """COCO Karpathy split (test: 5k images x 5 captions)."""

    name = "coco_karpathy"
    ANNOTATION_FILE = "dataset_coco.json"
    IMAGE_DIRS = ("images", ".")
    MANUAL_DOWNLOAD_INSTRUCTIONS = manual_instructions(ANNOTATION_FILE, IMAGE_DIRS)
