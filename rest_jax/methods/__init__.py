"""Registry of adaptation methods, chosen by name in configs and on the command line."""

from __future__ import annotations

from collections.abc import Callable

from rest_jax.methods.base import InnerResult, Method, StepContext, gradient_update
from rest_jax.methods.deyo import DeyoMethod
from rest_jax.methods.eata import EataMethod
from rest_jax.methods.read import ReadMethod
from rest_jax.methods.rest import RestMethod
from rest_jax.methods.sar import SarMethod
from rest_jax.methods.shot import ShotMethod
from rest_jax.methods.source import SourceMethod
from rest_jax.methods.tent import TentMethod

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


register("source", SourceMethod)
register("tcr", lambda: RestMethod("tcr"))
register("rest", lambda: RestMethod("rest"))
register("tent", TentMethod)
register("eata", EataMethod)
register("sar", SarMethod)
register("read", ReadMethod)
register("shot", ShotMethod)
register("deyo", DeyoMethod)

__all__ = [
    "InnerResult",
    "Method",
    "StepContext",
    "available",
    "get",
    "gradient_update",
    "register",
]
