"""Data for rest_jax: the synthetic world, its tokenizer, query streams, relevance structure,
image and text corruptions. The TFDS builders live in ``rest_jax.data.builders`` (imported on
demand: they pull in tensorflow_datasets)."""

from rest_jax.data.relevance import (
    composed_relevance,
    identity_relevance,
    image_to_text,
    relevance_mask,
    text_to_image,
    validate_relevance,
)
from rest_jax.data.streams import (
    Batch,
    StreamPlan,
    continual_plan,
    continual_stream,
    iterate_batches,
    mixed_plan,
    mixed_stream,
    query_shift_stream,
    reference_order,
    seeded_order,
    single_domain_plan,
    stream_order,
)
from rest_jax.data.synthworld import (
    WorldConfig,
    caption_consistency,
    generate_composed,
    generate_split,
    oracle_recall_at_1,
    render_scenes,
    sample_scenes,
)
from rest_jax.data.tokenizer import WorldTokenizer, normalize_text

__all__ = [
    "Batch",
    "StreamPlan",
    "WorldConfig",
    "WorldTokenizer",
    "caption_consistency",
    "composed_relevance",
    "continual_plan",
    "continual_stream",
    "generate_composed",
    "generate_split",
    "identity_relevance",
    "image_to_text",
    "iterate_batches",
    "mixed_plan",
    "mixed_stream",
    "normalize_text",
    "oracle_recall_at_1",
    "query_shift_stream",
    "reference_order",
    "relevance_mask",
    "render_scenes",
    "sample_scenes",
    "seeded_order",
    "single_domain_plan",
    "stream_order",
    "text_to_image",
    "validate_relevance",
]

# The corruption modules are owned separately; export them when present.
try:
    from rest_jax.data.image_corruptions import IMAGE_CORRUPTIONS, corrupt_image, corrupt_images

    __all__ += ["IMAGE_CORRUPTIONS", "corrupt_image", "corrupt_images"]
except ImportError:  # pragma: no cover
    pass
try:
    from rest_jax.data.text_corruptions import TEXT_CORRUPTIONS, corrupt_text, corrupt_texts

    __all__ += ["TEXT_CORRUPTIONS", "corrupt_text", "corrupt_texts"]
except ImportError:  # pragma: no cover
    pass
