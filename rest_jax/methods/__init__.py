"""Registry of adaptation methods, chosen by name in configs and on the command line.

Each entry is a function returning a :class:`Method` ``(init, inner_step)``; ``tcr`` and
``rest`` are one method (their presets differ, rest_jax/config.py).
"""

from __future__ import annotations

from collections.abc import Callable

from rest_jax.methods.base import InnerResult, Method, StepContext, gradient_update, no_state
from rest_jax.methods.baseline_common import entropy_method
from rest_jax.methods.deyo import deyo
from rest_jax.methods.eata import eata
from rest_jax.methods.read import read
from rest_jax.methods.rest import rest
from rest_jax.methods.sar import sar
from rest_jax.methods.shot import shot
from rest_jax.methods.source import source
from rest_jax.methods.tent import tent

_REGISTRY: dict[str, Callable[[], Method]] = {}


def register(name: str, factory: Callable[[], Method]) -> None:
    """Makes ``factory()`` available as method ``name``."""
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is already registered")
    _REGISTRY[name] = factory


def get(name: str) -> Method:
    """The method registered as ``name``; a clear error lists the known names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; known methods: {available()}")
    return _REGISTRY[name]()


def available() -> list[str]:
    return sorted(_REGISTRY)


register("source", source)
register("tcr", rest)
register("rest", rest)
register("tent", tent)
register("eata", eata)
register("sar", sar)
register("read", read)
register("shot", shot)
register("deyo", deyo)

__all__ = [
    "InnerResult",
    "Method",
    "StepContext",
    "available",
    "entropy_method",
    "get",
    "gradient_update",
    "no_state",
    "register",
]
