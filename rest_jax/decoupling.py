"""Gradient decoupling as an optax transform (docs/method.md section 4; a reconstruction of REST).

Given the adaptation gradient g and a cached reference r (the gradient of the pre-training
contrastive loss at theta_0), with ``c = <g, r>``:

  direction  g'  = g - c / ||r||^2 r     if c < 0          (mode "conflict", the default)
             g'  = g - c / ||r||^2 r     always            (mode "orthogonal")
  strength   g'' = g' + beta ||g'|| r / ||r||                (beta >= 0; 0 = pure projection)
  mode "none": g'' = g whatever beta (decoupling off; only cos(g, r) is recorded)

Inner products and norms run over the whole pytree (``per_leaf=False``) or leaf by leaf.
A reference with ``||r|| <= min_reference_norm`` leaves g unchanged. Place it before the
optimiser's scaling: ``optax.chain(gradient_decoupling(r), optax.adamw(...))``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rest_jax.config import DECOUPLING_MODES as MODES
from rest_jax.losses import symmetric_contrastive_loss
from rest_jax.numerics import tree_norm, tree_vdot
from rest_jax.selection import combine

PyTree = Any


class GradientDecouplingState(NamedTuple):
    """State of :func:`gradient_decoupling`.

    Attributes:
      reference: the cached reference direction r (same structure as the updates).
      cosine: float32 scalar, cos(g, r) of the last update over the whole tree (0 if undefined).
      projected: bool scalar, whether the last update was projected (any leaf, per-leaf mode).
      count: int32, number of updates seen.
      num_projected: int32, number of updates that were projected.
    """

    reference: PyTree
    cosine: jax.Array
    projected: jax.Array
    count: jax.Array
    num_projected: jax.Array


def _like(reference: PyTree, params: PyTree) -> PyTree:
    """``reference`` laid out as ``params`` (leaf by leaf, so that ``None`` and optax's
    ``MaskedNode`` placeholders match), cast to the params' dtypes."""
    ref_leaves, p_leaves = jax.tree.leaves(reference), jax.tree.leaves(params)
    if len(ref_leaves) != len(p_leaves) or any(
        jnp.shape(r) != jnp.shape(p) for r, p in zip(ref_leaves, p_leaves)
    ):
        raise ValueError(
            "the decoupling reference must have the params' leaves and shapes: "
            f"{[jnp.shape(r) for r in ref_leaves]} vs {[jnp.shape(p) for p in p_leaves]}"
        )
    ref_leaves = [jnp.asarray(r, jnp.asarray(p).dtype) for r, p in zip(ref_leaves, p_leaves)]
    return jax.tree.unflatten(jax.tree.structure(params), ref_leaves)


def _decouple(g, r, mode, beta, min_norm):
    """Applies the rule to one group (a pytree of leaves). Returns ``(g'', projected)``."""
    c = tree_vdot(g, r)
    rr = tree_vdot(r, r)
    usable = rr > min_norm**2
    rr_safe = jnp.where(usable, rr, 1)
    if mode == "none":  # decoupling off: no projection and no push, whatever beta is
        return g, jnp.zeros((), bool)
    if mode == "conflict":
        projected = usable & (c < 0)
    else:
        projected = usable
    coef = jnp.where(projected, c / rr_safe, 0)
    g1 = jax.tree.map(lambda gi, ri: (gi - coef * ri).astype(gi.dtype), g, r)
    g1_norm = tree_norm(g1)
    push = jnp.where(usable, beta * g1_norm / jnp.sqrt(rr_safe), 0)
    g2 = jax.tree.map(lambda gi, ri: (gi + push * ri).astype(gi.dtype), g1, r)
    return g2, projected


def gradient_decoupling(
    reference: PyTree | None = None,
    *,
    mode: str = "conflict",
    beta: float = 0.0,
    per_leaf: bool = False,
    min_reference_norm: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
    """Steers each update against a cached reference gradient (docs/method.md section 4).

    Args:
      reference: the reference direction r, a pytree shaped like the params; ``None`` starts
        from zeros (the identity until a reference is set with ``optax.tree.set(state,
        reference=r)`` or passed as the ``decoupling_reference`` extra argument).
      mode: "conflict" (remove the component along r only when <g, r> < 0), "orthogonal"
        (always remove it) or "none" (leave g as it is whatever ``beta``; only record the
        cosine).
      beta: strength of the push along r, ``beta ||g'|| r / ||r||``; 0 = pure projection.
        Ignored in mode "none".
      per_leaf: apply the rule leaf by leaf instead of over the whole tree.
      min_reference_norm: a reference with a smaller norm leaves the update unchanged.

    Returns:
      An ``optax.GradientTransformationExtraArgs``. Its ``update`` accepts the keyword
      ``decoupling_reference``: when given, that reference is used and cached in the state.
    """
    if mode not in MODES:
        raise ValueError(f"unknown decoupling mode {mode!r}; expected one of {MODES}")
    if isinstance(beta, (int, float)) and beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")

    def init_fn(params):
        ref = jax.tree.map(jnp.zeros_like, params) if reference is None else reference
        return GradientDecouplingState(
            reference=_like(ref, params),
            cosine=jnp.zeros((), jnp.float32),
            projected=jnp.zeros((), bool),
            count=jnp.zeros((), jnp.int32),
            num_projected=jnp.zeros((), jnp.int32),
        )

    def update_fn(updates, state, params=None, *, decoupling_reference=None, **extra_args):
        del params, extra_args
        ref = state.reference
        if decoupling_reference is not None:
            ref = _like(decoupling_reference, state.reference)
        if per_leaf:
            pairs = jax.tree.map(
                lambda g, r: _decouple(g, r, mode, beta, min_reference_norm), updates, ref
            )
            is_pair = lambda x: isinstance(x, tuple) and len(x) == 2
            new_updates = jax.tree.map(lambda p: p[0], pairs, is_leaf=is_pair)
            flags = [p[1] for p in jax.tree.leaves(pairs, is_leaf=is_pair)]
            projected = jnp.any(jnp.stack(flags)) if flags else jnp.zeros((), bool)
        else:
            new_updates, projected = _decouple(updates, ref, mode, beta, min_reference_norm)
        c = tree_vdot(updates, ref)
        denom = jnp.sqrt(tree_vdot(updates, updates) * tree_vdot(ref, ref))
        cosine = jnp.where(denom > 0, c / jnp.where(denom > 0, denom, 1), 0)
        new_state = GradientDecouplingState(
            reference=ref,
            cosine=cosine.astype(jnp.float32),
            projected=projected,
            count=state.count + 1,
            num_projected=state.num_projected + projected.astype(jnp.int32),
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def contrastive_reference(
    apply_fn: Callable[[PyTree, Any], jax.Array],
    adapted: PyTree,
    frozen: PyTree,
    source_inputs: Any,
    source_targets: jax.Array,
    temperature: float = 0.01,
) -> PyTree:
    """The reference r: gradient of the symmetric contrastive loss on clean source pairs.

    ``r = d/d theta  InfoNCE(normalize(f_theta(x_s)), normalize(y_s))`` at the given adapted
    parameters (theta_0 at start-up), with y_s the gallery-modality embeddings of the pairs.

    Args:
      apply_fn: the query encoder, ``apply_fn(params, inputs) -> (n, d)`` features.
      adapted, frozen: the params split by :func:`rest_jax.selection.partition`.
      source_inputs: n clean query-modality inputs.
      source_targets: (n, d) their paired gallery-modality embeddings.
      temperature: the contrastive temperature (CLIP's 1 / logit_scale).

    Returns:
      A pytree shaped like ``adapted``.
    """
    return _reference_gradient(
        apply_fn, adapted, frozen, source_inputs, source_targets, temperature
    )


# One jitted program, compiled once per encoder, temperature and shapes, with the weights as
# arguments: op by op, a ViT-B/16 gradient dispatches (and compiles) each primitive on its
# own; closed over, ``frozen`` would be baked into the program as constants.
@functools.partial(jax.jit, static_argnums=(0, 5))
def _reference_gradient(apply_fn, adapted, frozen, inputs, targets, temperature):
    def loss(a):
        q = apply_fn(combine(a, frozen), inputs)
        return symmetric_contrastive_loss(q, targets, temperature)

    return jax.grad(loss)(adapted)
