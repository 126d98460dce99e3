"""TCR and REST: refinement, anchor bank and the QS-robust objective (docs/method.md sections 1-3).

One method serves both presets: ``tcr`` is K = 1, no de-duplication, no consistency term and
no decoupling; ``rest`` switches those on. Per optimisation step:

  q = normalize(f_theta(x)), top-K of S = Q G^T, Z = refine(top-K), H = entropy(softmax(Z))
  at step 0 of the first W batches: bank <- insert(bank, SI, q, g_hat, H)
  E = max H over the bank, m = margin of the bank
  L = l_rem L_REM(H, E) + l_uni L_UNI(q) + l_gap L_GAP(q, g_hat, m) + l_con L_CON(q, g_hat)

References:
  Li et al., "Test-time adaptation for cross-modal retrieval with query shift", ICLR 2025
  (TCR; code: https://github.com/XLearning-SCU/2025-ICLR-TCR):
  the ``tcr`` preset, docs/method.md sections 1-3 and 5.1.
  Li, Yang and Peng, REST, arXiv 2511.14416, 2025 (https://arxiv.org/abs/2511.14416):
  the ``rest`` preset, this project's reconstruction (docs/method.md sections 5.2-5.3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rest_jax import bank as bank_lib
from rest_jax import losses
from rest_jax.config import AdaptConfig
from rest_jax.methods.base import InnerResult, Method, StepContext, gradient_update
from rest_jax.numerics import entropy
from rest_jax.refinement import refine_from_top_k


def bank_update_enabled(config: AdaptConfig, batch_index, step_index):
    """True at step 0 of the first ``bank_batches`` batches (every batch when None)."""
    first_step = step_index == 0
    if config.bank_batches is None:
        return first_step
    return first_step & (batch_index < config.bank_batches)


def objective(ctx: StepContext, adapted, bank: bank_lib.AnchorBank, step_index):
    """The loss of one step, with the queries, the updated bank and the metrics as aux.

    The candidates come from ``ctx.gallery_top_k`` (no gradient through the search), so with
    ``gallery_chunk_size`` set the (B, N) score matrix is never formed.
    """
    cfg = ctx.config
    q = ctx.encode(adapted, ctx.inputs)
    _, top = ctx.gallery_top_k(jax.lax.stop_gradient(q), cfg.num_candidates)
    refined = refine_from_top_k(
        q, top, ctx.gallery, ctx.valid, dedup=cfg.dedup, temperature=cfg.refinement_temperature
    )
    h = entropy(refined.logits, refined.column_mask)
    q_const = jax.lax.stop_gradient(q)
    bank = bank_lib.insert(
        bank,
        bank_lib.reliability_scores(q_const, refined.positives, ctx.valid),
        q_const,
        refined.positives,
        jax.lax.stop_gradient(h),
        ctx.valid,
        ratio=cfg.bank_ratio,
        enabled=bank_update_enabled(cfg, ctx.batch_index, step_index),
    )
    threshold = bank_lib.entropy_threshold(bank)
    margin = bank_lib.margin(bank)

    rem = losses.rem_loss(h, threshold, ctx.valid, cfg.rem_eps)
    uni = losses.uniformity_loss(q, ctx.valid, cfg.uniformity_scale)
    gap = losses.gap_loss(q, refined.positives, ctx.valid, margin)
    con = (
        losses.consistency_loss(
            q, refined.positives, rem.reliable, ctx.valid, cfg.consistency_temperature
        )
        if cfg.consistency_weight
        else jnp.zeros((), q.dtype)
    )
    loss = (
        cfg.rem_weight * rem.loss
        + cfg.uniformity_weight * uni
        + cfg.gap_weight * gap
        + cfg.consistency_weight * con
    )
    diag = losses.diagnostics(q_const, refined.positives, ctx.valid, cfg.uniformity_scale)
    metrics = {
        "rem": rem.loss,
        "uniformity_loss": uni,
        "gap_loss": gap,
        "consistency_loss": con,
        "num_reliable": rem.num_reliable,
        "entropy_threshold": threshold,
        "margin": margin,
        "bank_size": bank_lib.size(bank),
        "diag_uniformity": diag.uniformity,
        "diag_gap": diag.gap,
        "diag_consistency_correlation": diag.consistency_correlation,
    }
    return loss, (q, bank, metrics)


def init_rest(
    config: AdaptConfig, *, dim: int, dtype, num_gallery: int | None = None
) -> bank_lib.AnchorBank:
    """An empty anchor bank of ``config.bank_size`` entries of dimension ``dim``."""
    return bank_lib.init_bank(config.bank_size, dim, dtype)


def rest_step(ctx, adapted, opt_state, method_state, step_index) -> InnerResult:
    """One gradient step on TCR / REST's objective (:func:`objective`)."""
    return gradient_update(
        ctx, adapted, opt_state, lambda a: objective(ctx, a, method_state, step_index)
    )


def rest() -> Method:
    """TCR / REST as a :class:`rest_jax.methods.base.Method`; the state is the anchor bank."""
    return Method(init_rest, rest_step)
