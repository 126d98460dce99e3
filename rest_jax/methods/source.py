"""The source model: no adaptation, the frozen model's scores (docs/method.md section 6)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rest_jax.config import AdaptConfig
from rest_jax.methods.base import InnerResult


@dataclasses.dataclass(frozen=True)
class SourceMethod:
    """Encodes every batch with the unchanged parameters."""

    name: str = "source"

    def init(self, config: AdaptConfig, *, dim: int, dtype, num_gallery: int | None = None):
        return ()

    def inner_step(self, ctx, adapted, opt_state, method_state, step_index) -> InnerResult:
        queries = ctx.encode(adapted, ctx.inputs)
        return InnerResult(adapted, opt_state, method_state, queries, {"loss": jnp.zeros(())})
