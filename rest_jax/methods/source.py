"""The source model: no adaptation, the frozen model's scores (docs/method.md section 6)."""

from __future__ import annotations

import jax.numpy as jnp

from rest_jax.methods.base import InnerResult, Method, no_state


def source_step(ctx, adapted, opt_state, method_state, step_index) -> InnerResult:
    """Encodes the batch with the unchanged parameters (loss 0)."""
    del step_index
    queries = ctx.encode(adapted, ctx.inputs)
    return InnerResult(adapted, opt_state, method_state, queries, {"loss": jnp.zeros(())})


def source() -> Method:
    """The source model as a stateless :class:`rest_jax.methods.base.Method`."""
    return Method(no_state, source_step)
