"""The oracle row: supervised tuning of the adapted parameters, with labels (not a TTA method).

On a shifted stream in its stream order, the first half of the queries and their true
gallery items train the same parameters that test-time adaptation adapts (the query tower's
LayerNorms), with AdamW on the multi-positive InfoNCE loss against the whole (frozen) gallery

    L(q) = logsumexp_j (q . g_j / tau) - logsumexp_{j relevant} (q . g_j / tau);

the tuned tower then answers the second half. It bounds what LayerNorm-only adaptation can
win back on that shift: it uses labels, which an online method never sees.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rest_jax.data.streams import take_rows
from rest_jax.metrics import retrieval_metrics
from rest_jax.numerics import l2_normalize
from rest_jax.selection import combine, partition, select


@dataclasses.dataclass(frozen=True)
class OracleConfig:
    """The supervised tuning's schedule (chosen on the validation split, docs/tuning.md).

    ``temperature`` None means the source model's own, the one it was trained with
    (:func:`resolve`): a sharper one than the model's scores shifted queries far worse (a
    fixed 0.01 against SynthWorld's 0.031 left the oracle below the source model on t2i,
    docs/oracle_room.md).
    """

    learning_rate: float = 1e-2
    epochs: int = 5
    batch_size: int = 64
    temperature: float | None = None


def resolve(cfg: OracleConfig, model_temperature: float) -> OracleConfig:
    """``cfg`` with its temperature set: the model's where ``cfg`` names none."""
    if cfg.temperature is not None:
        return cfg
    return dataclasses.replace(cfg, temperature=float(model_temperature))


def positives_mask(relevant: np.ndarray, gallery_size: int) -> np.ndarray:
    """(Q, N) bool: ``mask[i, j]`` iff gallery item j is relevant to query i (-1 = padding)."""
    relevant = np.asarray(relevant)
    if relevant.ndim == 1:
        relevant = relevant[:, None]
    mask = np.zeros((len(relevant), gallery_size), bool)
    rows, cols = np.nonzero(relevant >= 0)
    mask[rows, relevant[rows, cols]] = True
    return mask


@functools.lru_cache
def _adamw(learning_rate: float) -> optax.GradientTransformation:
    # One object per learning rate: the jitted step is keyed on it (a static argument).
    return optax.adamw(learning_rate, weight_decay=0.0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _train_step(
    encoder, optimizer, adapted, opt_state, frozen, inputs, positives, gallery, temperature
):
    def loss_fn(a):
        q = l2_normalize(encoder(combine(a, frozen), inputs).astype(jnp.float32))
        logits = q @ gallery.T / temperature
        all_items = jax.nn.logsumexp(logits, axis=1)
        relevant = jax.nn.logsumexp(jnp.where(positives, logits, -jnp.inf), axis=1)
        return jnp.mean(all_items - relevant)

    loss, grads = jax.value_and_grad(loss_fn)(adapted)
    updates, opt_state = optimizer.update(grads, opt_state, adapted)
    return optax.apply_updates(adapted, updates), opt_state, loss


def oracle_retrieval(
    encoder,
    params,
    rules,
    inputs,
    order: np.ndarray,
    gallery: np.ndarray,
    relevant: np.ndarray,
    cfg: OracleConfig,
    embed,
) -> dict[str, float]:
    """Tunes on the first half of ``order`` with labels, evaluates on the second half.

    Args:
      encoder: the query tower, ``encoder(params, inputs) -> (B, d)``.
      params: the source query-tower params.
      rules: the adapted-parameter rules (the same as test-time adaptation's).
      inputs: (Q, ...) shifted query inputs (an array or a dict of arrays), rows = query ids.
      order: the stream order of the query ids (the first half trains, the rest is scored).
      gallery: (N, d) L2-normalised gallery embeddings.
      relevant: (Q, R) relevant gallery ids per query, -1 padded.
      cfg: the schedule, its temperature set (:func:`resolve`).
      embed: ``embed(encoder, params, inputs) -> (n, d)`` normalised embeddings.

    Returns:
      The retrieval metrics of the tuned tower on the second half (``r1``, ``r5``, ...) and
      ``source_r1``, the untuned tower's R@1 on the same half.
    """
    if cfg.temperature is None or not cfg.temperature > 0:
        raise ValueError(f"the oracle's temperature must be positive, got {cfg.temperature}")
    order = np.asarray(order)
    half = len(order) // 2
    train_ids, test_ids = order[:half], order[half:]
    adapted, frozen = partition(params, select(params, rules).mask)
    optimizer = _adamw(cfg.learning_rate)
    opt_state = optimizer.init(adapted)
    gallery = jnp.asarray(gallery, jnp.float32)
    positives = positives_mask(relevant, len(gallery))
    rng = np.random.default_rng(0)
    steps_per_epoch = max(1, half // cfg.batch_size)
    for _ in range(cfg.epochs):
        perm = rng.permutation(train_ids)
        for b in range(steps_per_epoch):
            ids = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            adapted, opt_state, _ = _train_step(
                encoder,
                optimizer,
                adapted,
                opt_state,
                frozen,
                take_rows(inputs, ids),
                positives[ids],
                gallery,
                cfg.temperature,
            )
    tuned = embed(encoder, combine(adapted, frozen), take_rows(inputs, test_ids))
    source = embed(encoder, params, take_rows(inputs, test_ids))
    out = retrieval_metrics(tuned @ np.asarray(gallery).T, relevant[test_ids])
    out["source_r1"] = retrieval_metrics(source @ np.asarray(gallery).T, relevant[test_ids])["r1"]
    return out
