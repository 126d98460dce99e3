"""Choosing the adapted parameters by explicit rules over parameter paths.

A parameter's path is its pytree key path joined with ``/`` (for a Flax params dict:
``"blocks_0/ln_1/scale"``). A rule is ``(regex, adapt)``; the first rule whose regex
matches the path (``re.search``) decides, and a path no rule matches is frozen.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

PyTree = Any
Rule = tuple[str, bool]


def path_to_str(path: Sequence[Any]) -> str:
    """Joins a jax key path (DictKey / GetAttrKey / SequenceKey ...) with ``/``."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


class Selection(NamedTuple):
    """Which leaves are adapted.

    Attributes:
      mask: pytree of Python bools, same structure as the params.
      paths: the selected paths with their sizes, in tree order.
    """

    mask: PyTree
    paths: tuple[tuple[str, int], ...]

    @property
    def size(self) -> int:
        """Number of adapted scalars."""
        return sum(n for _, n in self.paths)

    def describe(self) -> str:
        """A log-friendly listing: one line per selected path, then the total."""
        lines = [f"  {p}  ({n})" for p, n in self.paths]
        lines.append(f"adapted: {len(self.paths)} tensors, {self.size} scalars")
        return "\n".join(lines)


def select(params: PyTree, rules: Sequence[Rule]) -> Selection:
    """Applies path rules (first match wins, default frozen) to a params pytree.

    Args:
      params: any pytree of arrays.
      rules: ``(regex, adapt)`` pairs.

    Returns:
      A :class:`Selection`.
    """
    compiled = [(re.compile(pattern), bool(adapt)) for pattern, adapt in rules]

    def decide(path, leaf):
        name = path_to_str(path)
        for regex, adapt in compiled:
            if regex.search(name):
                return adapt
        return False

    mask = jax.tree_util.tree_map_with_path(decide, params)
    paths = tuple(
        (path_to_str(path), int(np.prod(np.shape(leaf))))
        for (path, leaf), keep in zip(
            jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(mask)
        )
        if keep
    )
    return Selection(mask, paths)


def _is_none(x):
    return x is None


def partition(params: PyTree, mask: PyTree) -> tuple[PyTree, PyTree]:
    """Splits params into (adapted, frozen) trees; each has ``None`` where the other has a leaf."""
    adapted = jax.tree.map(lambda p, m: p if m else None, params, mask)
    frozen = jax.tree.map(lambda p, m: None if m else p, params, mask)
    return adapted, frozen


def combine(adapted: PyTree, frozen: PyTree) -> PyTree:
    """Inverse of :func:`partition`."""
    return jax.tree.map(lambda a, f: f if a is None else a, adapted, frozen, is_leaf=_is_none)


# One path component naming a LayerNorm (or RMSNorm) module, case-insensitive: Flax's
# automatic names (LayerNorm_0, RMSNorm_1), "layer_norm"/"layernorm" anywhere in the name
# (final_layer_norm, input_layernorm, Hugging Face CLIP's pre_layrnorm), and "norm" or "ln" as
# the name or its last word before a suffix (norm, norm1, pre_norm, ln_1, ln_f, final_ln).
# Batch, group, instance, weight and spectral norms are not LayerNorms and never match.
_OTHER_NORMS = r"(?![^/]*(batch|group|instance|weight|spectral)_?norm)"
_LAYERNORM_MODULE = r"([^/]*(layer|layr|rms)_?norm|([^/]*_)?(norm|ln))([_\d][^/]*)?"

LAYERNORM_RULES: tuple[Rule, ...] = (
    (rf"(?i)(^|/){_OTHER_NORMS}{_LAYERNORM_MODULE}/(scale|bias)(/value)?$", True),
)
"""The default adapted set: the affine parameters (``scale``, ``bias``) of every LayerNorm and
RMSNorm, found by module name in Linen params (``LayerNorm_0/scale``, ``ln_1/bias``) and in
NNX states (``norm/scale/value``). A LayerNorm known only by a list index (an
``nn.Sequential`` layer) has no such name: pass rules for its path, or give an NNX model to
:meth:`rest_jax.Adapter.create`, which also finds its LayerNorms by type."""
