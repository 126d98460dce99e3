"""rest_jax: online test-time adaptation for cross-modal retrieval under query shift (REST, TCR).

``__all__`` is the public API, every name the README uses among it (tests/test_readme.py).
Submodules in it: ``bank``, ``config`` (``AdaptConfig``, the presets and the SynthWorld-tuned
values), ``losses``, ``methods``, ``pretrained`` (the world's shipped source model),
``refinement``, ``selection`` and ``retrieval`` (chunked and sharded top-K for large
galleries: ``top_k``, ``sharded_top_k``, ``shard_gallery``, ``gallery_mesh``).
``rest_jax.models`` (Flax CLIP, Hugging Face loading) and ``rest_jax.data`` are imported on
their own.
"""

from rest_jax import bank, config, losses, methods, pretrained, refinement, retrieval, selection
from rest_jax.adapter import Adapter, pad_batch
from rest_jax.config import AdaptConfig, preset
from rest_jax.decoupling import (
    GradientDecouplingState,
    contrastive_reference,
    gradient_decoupling,
)
from rest_jax.loop import StreamResult, batches_from_array, run_stream
from rest_jax.metrics import retrieval_metrics
from rest_jax.retrieval import gallery_mesh
from rest_jax.selection import LAYERNORM_RULES, Selection, combine, partition, select
from rest_jax.step import AdaptState, StepOutputs, StreamConstants, make_optimizer, make_step

__version__ = "0.1.0"

__all__ = [
    "AdaptConfig",
    "AdaptState",
    "Adapter",
    "GradientDecouplingState",
    "LAYERNORM_RULES",
    "Selection",
    "StepOutputs",
    "StreamConstants",
    "StreamResult",
    "bank",
    "batches_from_array",
    "combine",
    "config",
    "contrastive_reference",
    "gallery_mesh",
    "gradient_decoupling",
    "losses",
    "make_optimizer",
    "make_step",
    "methods",
    "pad_batch",
    "partition",
    "preset",
    "pretrained",
    "refinement",
    "retrieval",
    "retrieval_metrics",
    "run_stream",
    "select",
    "selection",
]
