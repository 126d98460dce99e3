"""The pieces of a query-shift study: retrieval data, shifted query sets, streams, evaluation.

A study runs every method on the same streams: for a direction (``i2t``: image queries
against a caption gallery; ``t2i``: caption queries against an image gallery), a shift is a
list of domains (one for query shift, several for diverse shift), each a set of shifted
queries with its relevance. The functions here are model-agnostic: they take a ``Towers``
(how to turn raw images / captions into query inputs and gallery embeddings).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from rest_jax import losses
from rest_jax.adapter import Adapter
from rest_jax.data import relevance as relevance_lib
from rest_jax.data import streams
from rest_jax.data.image_corruptions import IMAGE_CORRUPTIONS, corrupt_images
from rest_jax.data.text_corruptions import TEXT_CORRUPTIONS, corrupt_texts
from rest_jax.loop import StreamResult, run_stream
from rest_jax.metrics import retrieval_metrics
from rest_jax.models.gallery import embed_gallery

DIRECTIONS = ("i2t", "t2i")


@dataclasses.dataclass(frozen=True)
class RetrievalSplit:
    """Images with several captions each (COCO / Flickr / SynthWorld layout)."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    captions: list[str]  # (C,)
    caption_image_ids: np.ndarray  # (C,) int

    def __post_init__(self):
        if len(self.captions) != len(self.caption_image_ids):
            raise ValueError("captions and caption_image_ids differ in length")
        if len(self.images) == 0 or len(self.captions) == 0:
            raise ValueError("a retrieval split needs images and captions")


@dataclasses.dataclass(frozen=True)
class Towers:
    """How a study turns raw data into model inputs and embeddings.

    Attributes:
      image_inputs: uint8 images -> image-tower inputs.
      text_inputs: captions -> text-tower inputs (token ids).
      image_encoder, text_encoder: ``apply_fn(tower_params, inputs) -> features``.
      image_params, text_params: the source towers' parameters.
      image_rules, text_rules: which parameters adapt when that tower is the query tower.
      temperature: the source model's contrastive temperature (CLIP: ``1 / exp(logit_scale)``).
    """

    image_inputs: Callable[[np.ndarray], np.ndarray]
    text_inputs: Callable[[Sequence[str]], np.ndarray]
    image_encoder: Callable
    text_encoder: Callable
    image_params: Any
    text_params: Any
    image_rules: Sequence
    text_rules: Sequence
    temperature: float

    def query_side(self, direction: str):
        """(encoder, params, rules) of the query tower of ``direction``."""
        check_direction(direction)
        if direction == "i2t":
            return self.image_encoder, self.image_params, self.image_rules
        return self.text_encoder, self.text_params, self.text_rules


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {DIRECTIONS}")
    return direction


@dataclasses.dataclass(frozen=True)
class Domain:
    """One domain of shifted queries: e.g. ``gaussian_noise@5`` image queries."""

    name: str
    kind: str  # "image", "text", "clean", or "shift" (a task's own spec, named in full)
    level: Any = None  # severity (image) / level or rate (text)

    @property
    def label(self) -> str:
        return self.name if self.level is None else f"{self.name}@{self.level}"


def parse_domain(spec: str, direction: str) -> Domain:
    """``"clean"``, ``"gaussian_noise@5"`` or ``"synonym_replacement@0.3"`` -> Domain.

    Image corruptions go with ``i2t`` and text corruptions with ``t2i``.
    """
    if spec == "clean":
        return Domain("clean", "clean")
    name, _, level = spec.partition("@")
    if not level:
        raise ValueError(f"domain {spec!r} needs a level: name@level")
    if name in IMAGE_CORRUPTIONS:
        if direction != "i2t":
            raise ValueError(f"image corruption {name!r} shifts image queries (i2t)")
        return Domain(name, "image", int(level))
    if name in TEXT_CORRUPTIONS:
        if direction != "t2i":
            raise ValueError(f"text corruption {name!r} shifts caption queries (t2i)")
        return Domain(name, "text", float(level) if "." in level else int(level))
    raise ValueError(
        f"unknown corruption {name!r}; image: {IMAGE_CORRUPTIONS}; text: {TEXT_CORRUPTIONS}"
    )


def relevance(split: RetrievalSplit, direction: str) -> np.ndarray:
    """Padded relevant-gallery ids per query for ``direction``."""
    if check_direction(direction) == "i2t":
        return relevance_lib.image_to_text(split.caption_image_ids, len(split.images))
    return relevance_lib.text_to_image(split.caption_image_ids, len(split.images))


def query_inputs(split: RetrievalSplit, direction: str, domain: Domain, towers: Towers, seed: int):
    """The query-tower inputs of every query of ``split`` under ``domain`` (deterministic)."""
    if check_direction(direction) == "i2t":
        images = split.images
        if domain.kind == "image":
            ids = np.arange(len(images))
            images = corrupt_images(images, domain.name, domain.level, seed=seed, sample_ids=ids)
        return towers.image_inputs(images)
    captions = split.captions
    if domain.kind == "text":
        ids = np.arange(len(captions))
        captions = corrupt_texts(captions, domain.name, domain.level, seed=seed, sample_ids=ids)
    return towers.text_inputs(captions)


def embed(encoder, params, inputs, batch_size: int = 256) -> np.ndarray:
    """L2-normalised float32 embeddings of ``inputs``, as a numpy array
    (:func:`rest_jax.models.gallery.embed_gallery`, without a progress bar)."""
    return np.asarray(embed_gallery(encoder, params, inputs, batch_size, show_progress=False))


def gallery_embeddings(split: RetrievalSplit, direction: str, towers: Towers) -> np.ndarray:
    """Clean gallery embeddings (computed once by the source model, never recomputed)."""
    if check_direction(direction) == "i2t":
        return embed(towers.text_encoder, towers.text_params, towers.text_inputs(split.captions))
    return embed(towers.image_encoder, towers.image_params, towers.image_inputs(split.images))


@dataclasses.dataclass(frozen=True)
class ShiftedStream:
    """A planned stream over one or more domains, with what its evaluation needs."""

    name: str
    domains: tuple[Domain, ...]
    inputs: tuple[Any, ...]  # per domain, query inputs indexed by query id
    plan: streams.StreamPlan
    n_queries: int  # queries per domain (ids are domain * n_queries + id)

    def batches(self):
        for batch in streams.iterate_batches(self.plan, list(self.inputs)):
            ids = np.where(batch["mask"], batch["domain"] * self.n_queries + batch["ids"], -1)
            yield {"inputs": batch["inputs"], "mask": batch["mask"], "ids": ids}


def make_stream(
    name: str,
    domains: Sequence[Domain],
    inputs: Sequence[Any],
    *,
    kind: str = "single",
    batch_size: int = 64,
    order: str = "reference",
    seed: int = 0,
    total: int | None = None,
) -> ShiftedStream:
    """Plans a stream: ``kind`` is "single" (one domain), "mixed" or "continual".

    A diverse stream holds ``total`` queries (default: every query of every domain), shared
    equally by its domains; each domain contributes the first queries of its stream order."""
    sizes = [streams.num_rows(x) for x in inputs]
    if len(set(sizes)) != 1:
        raise ValueError(f"every domain needs the same query set; sizes {sizes}")
    if kind == "single":
        if len(domains) != 1:
            raise ValueError("a single-domain stream takes one domain")
        plan = streams.single_domain_plan(sizes[0], batch_size, order, seed)
    elif kind == "mixed":
        total = min(total or sum(sizes), sum(sizes))
        plan = streams.mixed_plan(
            sizes, [1.0] * len(sizes), total=total, batch_size=batch_size, seed=seed, order=order
        )
    elif kind == "continual":
        each = min(sizes[0], (total or sum(sizes)) // len(sizes))
        plan = streams.continual_plan([each] * len(sizes), batch_size, order=order, seed=seed)
    else:
        raise ValueError(f"unknown stream kind {kind!r}; expected single, mixed or continual")
    return ShiftedStream(name, tuple(domains), tuple(inputs), plan, sizes[0])


def evaluate_stream(
    result: StreamResult, stream: ShiftedStream, relevant: np.ndarray
) -> dict[str, Any]:
    """Overall and per-domain retrieval metrics of a finished stream."""
    n_domains = len(stream.domains)
    tiled = np.concatenate([relevant] * n_domains) if n_domains > 1 else relevant
    out = retrieval_metrics(result.scores, tiled, result.query_ids)
    if n_domains > 1:
        per = {}
        for d, domain in enumerate(stream.domains):
            rows = result.query_ids // stream.n_queries == d
            per[domain.label] = retrieval_metrics(
                result.scores[rows], tiled, result.query_ids[rows]
            )
        out["per_domain"] = per
    return out


def run_method(
    adapter: Adapter, stream: ShiftedStream, relevant: np.ndarray
) -> tuple[dict[str, Any], StreamResult]:
    """Runs a fresh adapter state over ``stream``; returns its metrics and the raw result."""
    result = run_stream(adapter, stream.batches(), state=adapter.init_state())
    return evaluate_stream(result, stream, relevant), result


def clean_retrieval(encoder, params, clean_inputs, gallery, relevant) -> dict[str, float]:
    """Retrieval of clean queries by a query tower with ``params``, without adaptation."""
    q = embed(encoder, params, clean_inputs)
    return retrieval_metrics(q @ np.asarray(gallery).T, relevant)


def query_diagnostics(queries: np.ndarray, gallery: np.ndarray) -> dict[str, float]:
    """Uniformity, gap and consistency of a query set against its top-1 retrieved items."""
    q = jnp.asarray(queries)
    g = jnp.asarray(gallery)
    positives = g[jnp.argmax(q @ g.T, axis=1)]
    d = losses.diagnostics(q, positives, jnp.ones(len(q), bool))
    return {k: float(v) for k, v in d._asdict().items()}
