"""Flax NNX modules as query encoders: split into a pure function and a state, merged back.

    adapter = Adapter.create(model, gallery, config=preset("rest"))   # model: an nnx.Module
    result = run_stream(adapter, batches)
    adapted = adapter.module(result.final_state)     # a new module with the adapted weights
    nnx.update(model, adapter.params(result.final_state))   # or update ``model`` in place

The adapter's parameter pytree is the module's whole ``nnx.State`` (``nnx.split(model)``);
its leaf paths end in ``/value`` (``blocks/0/norm/scale/value``). The adapted set is chosen
by path rules as for any pytree and, with the default rules, also by type: every
``nnx.LayerNorm`` and ``nnx.RMSNorm``, including those that only a list index names (the
layers of an ``nnx.Sequential``). The encoder is called as ``module(inputs)``; put a module
with dropout or batch statistics in evaluation mode (``model.eval()``) before adapting it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from rest_jax.selection import Rule

LAYERNORM_TYPES: tuple[type, ...] = (nnx.LayerNorm, nnx.RMSNorm)


def is_nnx(encoder: Any) -> bool:
    """Whether ``encoder`` is an ``nnx.Module`` or a ``(graphdef, state)`` pair of one."""
    if isinstance(encoder, nnx.Module):
        return True
    return isinstance(encoder, tuple) and len(encoder) == 2 and isinstance(encoder[0], nnx.GraphDef)


def split(encoder: Any) -> tuple[nnx.GraphDef, nnx.State]:
    """``(graphdef, state)`` of an ``nnx.Module`` (``nnx.split``) or of a pair already split.

    Raises:
      TypeError: a pair whose second item is not an ``nnx.State``.
    """
    if isinstance(encoder, nnx.Module):
        return nnx.split(encoder)
    graphdef, state = encoder
    if not isinstance(state, nnx.State):
        raise TypeError(
            f"a (graphdef, state) encoder needs the nnx.State of nnx.split(model), got "
            f"{type(state).__name__}"
        )
    return graphdef, state


def apply_fn(graphdef: nnx.GraphDef) -> Callable[[nnx.State, Any], jax.Array]:
    """The pure encoder ``apply(state, inputs) = nnx.merge(graphdef, state)(inputs)``."""

    def apply(state: nnx.State, inputs: Any) -> jax.Array:
        return nnx.merge(graphdef, state)(inputs)

    return apply


def layernorm_rules(
    graphdef: nnx.GraphDef, state: nnx.State, types: tuple[type, ...] = LAYERNORM_TYPES
) -> tuple[Rule, ...]:
    """One rule per module of the given types: its ``scale`` and ``bias`` leaves adapt.

    Args:
      graphdef, state: the split module.
      types: the module classes to select (default: ``nnx.LayerNorm``, ``nnx.RMSNorm``).

    Returns:
      ``(regex, True)`` rules matching those modules' state paths exactly.
    """
    rules = []
    for path, module in nnx.iter_modules(nnx.merge(graphdef, state)):
        if isinstance(module, types):
            prefix = "".join(re.escape(str(key)) + "/" for key in path)
            rules.append((rf"^{prefix}(scale|bias)/value$", True))
    return tuple(rules)
