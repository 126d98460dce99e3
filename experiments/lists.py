"""The one parser of the comma-separated lists that the command lines take."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def comma_list(text: str, cast: Callable[[str], Any] = str) -> list:
    """``"a, b,,c"`` -> ``[cast("a"), cast("b"), cast("c")]``: items stripped, empty ones
    dropped (so ``""`` is the empty list)."""
    return [cast(part.strip()) for part in text.split(",") if part.strip()]
