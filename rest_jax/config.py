"""The one configuration of an adaptation run, and its named presets (docs/method.md section 5).

A run is described by a frozen :class:`AdaptConfig`; presets are named starting points and
every field can be overridden (``preset("rest", num_candidates=4)`` or
``config.replace(...)``). There are no hidden per-dataset overrides.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

DECOUPLING_MODES = ("conflict", "orthogonal", "none")
"""Modes of gradient decoupling (docs/method.md section 4); rest_jax/decoupling.py reads them."""
NONFINITE_POLICIES = ("mask", "rollback", "raise")
"""What the step does with query rows holding NaN or inf (``AdaptConfig.nonfinite_inputs``)."""

# How ``AdaptConfig.__post_init__`` checks each field: (kind, range, None allowed). Kinds:
# "bool", "int", "real" (finite), "method" (a registered method name) or a tuple of the
# allowed strings. Ranges name a test in ``_RANGES``. Every field has an entry (tested).
FIELD_CHECKS: dict[str, tuple[Any, str | None, bool]] = {
    "method": ("method", None, False),
    "steps": ("int", ">= 1", False),
    "episodic": ("bool", None, False),
    "learning_rate": ("real", "> 0", False),
    "weight_decay": ("real", ">= 0", False),
    "b1": ("real", "in [0, 1)", False),
    "b2": ("real", "in [0, 1)", False),
    "eps": ("real", ">= 0", False),
    "num_candidates": ("int", ">= 1", False),
    "dedup": ("bool", None, False),
    "refinement_temperature": ("real", "> 0", False),
    "bank_size": ("int", ">= 1", False),
    "bank_ratio": ("real", "in [0, 1]", False),
    "bank_batches": ("int", ">= 0", True),
    "rem_weight": ("real", ">= 0", False),
    "uniformity_weight": ("real", ">= 0", False),
    "gap_weight": ("real", ">= 0", False),
    "consistency_weight": ("real", ">= 0", False),
    "uniformity_scale": ("real", ">= 0", False),
    "rem_eps": ("real", ">= 0", False),
    "consistency_temperature": ("real", "> 0", False),
    "decoupling": ("bool", None, False),
    "decoupling_mode": (DECOUPLING_MODES, None, False),
    "decoupling_beta": ("real", ">= 0", False),
    "decoupling_per_leaf": ("bool", None, False),
    "reference_temperature": ("real", "> 0", False),
    "reference_refresh_every": ("int", ">= 1", True),
    "record_reference_cosine": ("bool", None, False),
    "baseline_temperature": ("real", "> 0", False),
    "eata_fraction": ("real", "in [0, 1]", False),
    "eata_cosine_margin": ("real", ">= 0", False),
    "eata_entropy_margin": ("real", None, False),
    "eata_mean_decay": ("real", "in [0, 1]", False),
    "sar_fraction": ("real", "in [0, 1]", False),
    "sar_rho": ("real", ">= 0", False),
    "sar_ema_decay": ("real", "in [0, 1]", False),
    "sar_reset_threshold": ("real", None, False),
    "shot_confidence": ("real", "in [0, 1]", False),
    "shot_ce_weight": ("real", ">= 0", False),
    "shot_diversity_eps": ("real", ">= 0", False),
    "deyo_fraction": ("real", "in [0, 1]", False),
    "deyo_entropy_margin": ("real", None, False),
    "deyo_plpd_threshold": ("real", None, False),
    "deyo_entropy_weight": ("real", ">= 0", False),
    "deyo_plpd_weight": ("real", ">= 0", False),
    "deyo_patch_grid": ("int", ">= 1", False),
    "deyo_image_queries": ("bool", None, True),
    "gallery_chunk_size": ("int", ">= 1", True),
    "output_top_k": ("int", ">= 1", True),
    "rollback_nonfinite": ("bool", None, False),
    "nonfinite_inputs": (NONFINITE_POLICIES, None, False),
    "skip_degenerate_batches": ("bool", None, False),
    "collapse_guard": ("bool", None, False),
    "collapse_min_distinct": ("real", "in [0, 1]", False),
    "collapse_ema_decay": ("real", "in [0, 1)", False),
    "collapse_warmup": ("int", ">= 1", False),
}

_RANGES = {
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    "in [0, 1]": lambda v: 0 <= v <= 1,
    "in [0, 1)": lambda v: 0 <= v < 1,
}


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


def _field_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``name`` (None when it is fine)."""
    kind, bound, optional = FIELD_CHECKS[name]
    if value is None:
        return None if optional else f"{name} must not be None"
    if isinstance(kind, tuple):
        return None if value in kind else f"unknown {name} {value!r}; expected one of {kind}"
    if kind == "method":
        from rest_jax.methods import available  # the registry imports this module

        if not isinstance(value, str) or value not in available():
            return f"unknown method {value!r}; known methods: {available()}"
        return None
    if kind == "bool":
        return None if _is_bool(value) else f"{name} must be a bool, got {value!r}"
    if _is_bool(value) or not isinstance(value, numbers.Real):
        return f"{name} must be a number, got {value!r}"
    if kind == "int" and not isinstance(value, numbers.Integral):
        return f"{name} must be an int, got {value!r}"
    if not math.isfinite(value):
        return f"{name} must be finite, got {value!r}"
    if bound is not None and not _RANGES[bound](value):
        return f"{name} must be {bound}{' (or None)' if optional else ''}, got {value!r}"
    return None


def _combination_problems(config: AdaptConfig) -> list[str]:
    """Problems of fields that are fine alone but not together."""
    problems = []
    if config.reference_refresh_every is not None and not (
        config.decoupling or config.record_reference_cosine
    ):
        problems.append(
            "reference_refresh_every refreshes a reference that only decoupling=True or "
            "record_reference_cosine=True computes"
        )
    return problems


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
    refinement_temperature: float = 0.02
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
    uniformity_scale: float = 0.1
    """t in L_UNI = mean exp(-t ||q - mean(Q)||): a rate on a distance, not a temperature."""
    rem_eps: float = 1e-3
    consistency_temperature: float = 0.05

    # Section 4: gradient decoupling.
    decoupling: bool = False
    """Steer the update against the reference gradient (needs clean source pairs)."""
    decoupling_mode: str = "conflict"
    decoupling_beta: float = 0.0
    decoupling_per_leaf: bool = False
    reference_temperature: float = 0.01
    reference_refresh_every: int | None = None
    """Recompute the reference at the current params every R batches (None = never)."""
    record_reference_cosine: bool = False
    """Record cos(g, r) per step (metric ``reference_cosine``) also when ``decoupling`` is off.
    The reference r is computed only when this or ``decoupling`` is on."""

    # Section 6: baselines (whole-gallery logits).
    baseline_temperature: float = 0.01
    # --- baseline hyperparameters (rest_jax/methods/{eata,sar,shot,deyo}.py; docs/baselines.md).
    # Fractions keep int(fraction * n_valid) queries.
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
    """Return each query's ``k`` best gallery items (``StepOutputs.top_scores``/``top_ids``)
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
        """Checks every field once, by its rule in ``FIELD_CHECKS``, then the combinations.

        Raises:
          ValueError: naming each bad field, its value and what it should be (all of them in
            one message).
        """
        names = [f.name for f in dataclasses.fields(self) if f.name in FIELD_CHECKS]
        problems = [p for n in names if (p := _field_problem(n, getattr(self, n))) is not None]
        if not problems:
            problems = _combination_problems(self)
        if len(problems) == 1:
            raise ValueError(problems[0])
        if problems:
            raise ValueError(
                f"invalid AdaptConfig ({len(problems)} fields): " + "; ".join(problems)
            )


# REST's defaults are a reconstruction (docs/method.md section 5.2): chosen on the synthetic world's
# validation split, never on its test split; see docs/rest_defaults.md.
REST_DEFAULTS: dict[str, Any] = dict(
    num_candidates=4,
    dedup=True,
    consistency_weight=0.0,  # the validation search switched L_CON off (docs/rest_defaults.md)
    consistency_temperature=0.05,
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


# Per-method optimisation settings tuned on the synthetic world's VALIDATION split with the
# same budget for every method (docs/tuning.md; ``python -m experiments.tune``). The test
# split only gives final numbers. Real CLIP checkpoints keep the published values (PRESETS).
SYNTHWORLD_TUNED: dict[str, dict[str, Any]] = {
    "tent": dict(learning_rate=0.003, steps=1),
    "eata": dict(learning_rate=0.001, steps=3),
    "sar": dict(learning_rate=0.003, steps=1),
    "read": dict(learning_rate=0.001, steps=3),
    "shot": dict(learning_rate=0.003, steps=1),
    "deyo": dict(learning_rate=0.001, steps=3),
    "tcr": dict(learning_rate=0.003, steps=1),
    "rest": dict(learning_rate=0.001, steps=3),
}

HYPERPARAMETER_SETS = ("paper", "synthworld")


def preset(name: str, hyperparameters: str = "paper", **overrides: Any) -> AdaptConfig:
    """The named preset with ``overrides`` applied.

    Args:
      name: a key of ``PRESETS``.
      hyperparameters: "paper" (the published values) or "synthworld" (the values tuned on
        the synthetic world's validation split, ``SYNTHWORLD_TUNED``).
      **overrides: AdaptConfig fields, applied last.

    Raises:
      ValueError: for an unknown preset name or hyperparameter set (the message lists the
        known ones).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    if hyperparameters not in HYPERPARAMETER_SETS:
        raise ValueError(
            f"unknown hyperparameters {hyperparameters!r}; expected one of {HYPERPARAMETER_SETS}"
        )
    tuned = SYNTHWORLD_TUNED.get(name, {}) if hyperparameters == "synthworld" else {}
    return AdaptConfig().replace(**{**PRESETS[name], **tuned, **overrides})
