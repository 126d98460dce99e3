"""The one configuration of an adaptation run, and its named presets (docs/method.md section 5).

A run is described by a frozen :class:`AdaptConfig`; presets are named starting points and
every field can be overridden (``preset("rest", num_candidates=4)`` or
``config.replace(...)``). There are no hidden per-dataset overrides.
"""

from __future__ import annotations

import dataclasses
from typing import Any

DECOUPLING_MODES = ("conflict", "orthogonal", "none")


@dataclasses.dataclass(frozen=True)
class AdaptConfig:
    """Hyperparameters of online adaptation. Field groups follow docs/method.md's sections."""

    method: str = "tcr"
    """Registered method name (``rest_jax.methods.available()``)."""
    steps: int = 3
    """Optimisation steps per batch; the batch's scores come from the last step's forward."""
    episodic: bool = False
    """Restore the initial adapted params and optimiser state before every batch."""

    # Optimiser: AdamW, constant learning rate (docs/method.md section 0).
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    # Section 1: query prediction refinement.
    num_candidates: int = 1
    """K, candidates per query (1 = TCR)."""
    dedup: bool = False
    """Mask repeated candidate columns (REST)."""
    tau: float = 0.02
    """Temperature of the refined logits."""

    # Section 2: anchor bank.
    bank_size: int = 64
    bank_ratio: float = 0.3
    bank_batches: int | None = 10
    """Update the bank at step 0 of the first W batches; ``None`` = every batch."""

    # Section 3: objective weights and constants.
    rem_weight: float = 1.0
    uniformity_weight: float = 1.0
    gap_weight: float = 1.0
    consistency_weight: float = 0.0
    uniformity_t: float = 0.1
    rem_eps: float = 1e-3
    consistency_tau: float = 0.05

    # Section 4: gradient decoupling.
    decoupling: bool = False
    """Steer the update against the reference gradient (needs clean source pairs)."""
    decoupling_mode: str = "conflict"
    decoupling_beta: float = 0.0
    decoupling_per_leaf: bool = False
    reference_temperature: float = 0.01
    reference_refresh_every: int | None = None
    """Recompute the reference at the current params every R batches (None = never)."""

    # Section 6: baselines (whole-gallery logits).
    baseline_tau: float = 0.01
    # --- baseline hyperparameters (rest_jax/methods/{eata,sar,shot,deyo}.py; docs/baselines.md).
    # Fractions keep int(fraction * n_valid) queries; checked by each method's init.
    eata_fraction: float = 0.4
    """EATA: keep the int(fraction * n) lowest-entropy queries."""
    eata_cosine_margin: float = 0.05
    """EATA: then keep those whose cosine to the running mean prediction is below this."""
    eata_entropy_margin: float = 0.4
    """EATA: sample weight exp(margin - H)."""
    eata_mean_decay: float = 0.9
    """EATA: running mean prediction m <- decay * m + (1 - decay) * mean(p over the kept)."""
    sar_fraction: float = 0.4
    """SAR: first filter, the int(fraction * n) lowest-entropy queries (threshold = their max)."""
    sar_rho: float = 0.05
    """SAR: SAM radius, e = rho * g / ||g||."""
    sar_ema_decay: float = 0.9
    """SAR: entropy EMA ema <- decay * ema + (1 - decay) * loss of the second filter."""
    sar_reset_threshold: float = 0.2
    """SAR: restore the source state when the EMA falls below this."""
    shot_confidence: float = 0.9
    """SHOT: pseudo-label a query when its top probability exceeds this."""
    shot_ce_weight: float = 0.1
    """SHOT: weight of the pseudo-label cross-entropy."""
    shot_diversity_eps: float = 1e-5
    """SHOT: log(mean p + eps) in the diversity term (the reference's constant)."""
    deyo_fraction: float = 0.5
    """DeYO: keep queries with entropy strictly below the (int(fraction * n) + 1)-th lowest."""
    deyo_entropy_margin: float = 0.4
    """DeYO: entropy part of the weight, exp(margin - H)."""
    deyo_plpd_threshold: float = 0.2
    """DeYO: keep queries whose PLPD (image queries only) is above this."""
    deyo_entropy_weight: float = 1.0
    deyo_plpd_weight: float = 1.0
    """DeYO: weight = entropy_weight * exp(margin - H) + plpd_weight * exp(PLPD)."""
    deyo_patch_grid: int = 4
    """DeYO: the shuffled view cuts each image into a grid x grid of patches."""
    deyo_image_queries: bool | None = None
    """DeYO: queries are images (NHWC); None infers it from the inputs (a 4-D array)."""
    # --- end of baseline hyperparameters.

    # Gallery scale (rest_jax/retrieval.py).
    gallery_chunk_size: int | None = None
    """Score the gallery this many rows at a time wherever only a top-K is needed (TCR/REST's
    candidate search, ``output_top_k``): memory O(B (C + K)) instead of O(B N). ``None``: one
    (B, N) matrix. The baselines' losses are softmaxes over the whole gallery and always form
    it."""
    output_top_k: int | None = None
    """Return each query's ``k`` best gallery items (``StepOutputs.top_values``/``top_ids``)
    instead of its (B, N) score row (``StepOutputs.scores`` is then ``None``)."""

    # Robustness.
    rollback_nonfinite: bool = True
    """Keep the previous state when a batch would make it non-finite (counted in metrics)."""
    nonfinite_inputs: str = "mask"
    """Query rows with NaN/inf inputs: ``"mask"`` (drop them from the update, answer them
    with NaN; the rest of the batch adapts), ``"rollback"`` (the whole batch is rolled back)
    or ``"raise"`` (host inputs: ValueError naming the rows; device inputs: as ``"mask"``)."""
    skip_degenerate_batches: bool = True
    """Answer but do not adapt on a batch whose valid rows (two or more) are all identical."""
    collapse_guard: bool = False
    """Restore the source state when the model collapses (rest_jax/guards.py)."""
    collapse_min_distinct: float = 0.1
    """Collapse = EMA of the distinct top-1 fraction of a batch below this."""
    collapse_ema_decay: float = 0.9
    collapse_warmup: int = 5
    """Batches the EMA must hold (since the start or the last reset) before a reset fires."""

    def replace(self, **overrides: Any) -> AdaptConfig:
        """A copy with some fields changed; unknown names raise a clear error."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown AdaptConfig field(s): {sorted(unknown)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {self.num_candidates}")
        if not 0.0 <= self.bank_ratio <= 1.0:
            raise ValueError(f"bank_ratio must be in [0, 1], got {self.bank_ratio}")
        if self.bank_size < 1:
            raise ValueError(f"bank_size must be >= 1, got {self.bank_size}")
        if self.decoupling_mode not in DECOUPLING_MODES:
            raise ValueError(
                f"unknown decoupling_mode {self.decoupling_mode!r}; expected {DECOUPLING_MODES}"
            )
        if self.gallery_chunk_size is not None and self.gallery_chunk_size < 1:
            raise ValueError(
                f"gallery_chunk_size must be >= 1 or None, got {self.gallery_chunk_size}"
            )
        if self.output_top_k is not None and self.output_top_k < 1:
            raise ValueError(f"output_top_k must be >= 1 or None, got {self.output_top_k}")
        for name in ("tau", "baseline_tau", "consistency_tau", "reference_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


# REST's defaults are a reconstruction (docs/method.md section 5.2): chosen on the synthetic world's
# validation split, never on its test split; see docs/rest_defaults.md.
REST_DEFAULTS: dict[str, Any] = dict(
    num_candidates=4,
    dedup=True,
    consistency_weight=0.0,  # the validation search switched L_CON off (docs/rest_defaults.md)
    consistency_tau=0.05,
    decoupling=True,
    decoupling_mode="conflict",
    decoupling_beta=0.3,
)

PRESETS: dict[str, dict[str, Any]] = {
    "source": dict(method="source", steps=1),
    "tent": dict(method="tent"),
    "eata": dict(method="eata"),
    "sar": dict(method="sar"),
    "read": dict(method="read"),
    "shot": dict(method="shot"),
    "deyo": dict(method="deyo"),
    "tcr": dict(method="tcr"),
    "rest": dict(method="rest", **REST_DEFAULTS),
}


def preset(name: str, **overrides: Any) -> AdaptConfig:
    """The named preset with ``overrides`` applied.

    Raises:
      ValueError: for an unknown preset name (the message lists the known ones).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    return AdaptConfig().replace(**{**PRESETS[name], **overrides})
