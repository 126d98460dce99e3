"""AdaptConfig checks every field once, when it is built, and names what is wrong."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from rest_jax import config as config_lib
from rest_jax import decoupling
from rest_jax.config import FIELD_CHECKS, PRESETS, AdaptConfig, preset


def test_every_field_has_exactly_one_check():
    assert set(FIELD_CHECKS) == {f.name for f in dataclasses.fields(AdaptConfig)}


def test_defaults_and_every_preset_are_valid():
    AdaptConfig()
    for name in PRESETS:
        preset(name)


def test_one_error_names_every_bad_field():
    with pytest.raises(ValueError) as error:
        AdaptConfig(method="nonexistent", learning_rate=-1, eata_fraction=3.0)
    message = str(error.value)
    assert message.startswith("invalid AdaptConfig (3 fields): ")
    assert "unknown method 'nonexistent'; known methods: [" in message
    assert "learning_rate must be > 0, got -1" in message
    assert "eata_fraction must be in [0, 1], got 3.0" in message


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("method", 3, "unknown method 3"),
        ("steps", 0, "steps must be >= 1, got 0"),
        ("steps", 2.5, "steps must be an int, got 2.5"),
        ("steps", True, "steps must be a number, got True"),
        ("steps", None, "steps must not be None"),
        ("learning_rate", float("nan"), "learning_rate must be finite, got nan"),
        ("learning_rate", "3e-4", "learning_rate must be a number, got '3e-4'"),
        ("b2", 1.0, "b2 must be in [0, 1), got 1.0"),
        ("refinement_temperature", 0.0, "refinement_temperature must be > 0, got 0.0"),
        ("bank_ratio", 1.5, "bank_ratio must be in [0, 1], got 1.5"),
        ("bank_batches", -1, "bank_batches must be >= 0 (or None), got -1"),
        ("consistency_weight", -0.5, "consistency_weight must be >= 0, got -0.5"),
        ("decoupling", "yes", "decoupling must be a bool, got 'yes'"),
        ("decoupling_mode", "sideways", "unknown decoupling_mode 'sideways'; expected one of"),
        ("decoupling_beta", -1.0, "decoupling_beta must be >= 0, got -1.0"),
        ("reference_refresh_every", 0, "reference_refresh_every must be >= 1 (or None), got 0"),
        ("sar_rho", -0.1, "sar_rho must be >= 0, got -0.1"),
        ("deyo_patch_grid", 0, "deyo_patch_grid must be >= 1, got 0"),
        ("deyo_image_queries", "auto", "deyo_image_queries must be a bool, got 'auto'"),
        ("gallery_chunk_size", 0, "gallery_chunk_size must be >= 1 (or None), got 0"),
        ("output_top_k", 0, "output_top_k must be >= 1 (or None), got 0"),
        ("nonfinite_inputs", "ignore", "unknown nonfinite_inputs 'ignore'; expected one of"),
        ("collapse_ema_decay", 1.0, "collapse_ema_decay must be in [0, 1), got 1.0"),
        ("collapse_warmup", 0, "collapse_warmup must be >= 1, got 0"),
    ],
)
def test_a_bad_field_is_named_with_its_value_and_rule(field, value, expected):
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}"):
        AdaptConfig(**{field: value})
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}"):
        preset("rest").replace(**{field: value})  # replace and presets check too


def test_none_numpy_scalars_and_unbounded_fields_are_accepted():
    config = AdaptConfig(
        bank_batches=None,
        reference_refresh_every=None,
        deyo_image_queries=None,
        learning_rate=np.float32(1e-3),
        steps=np.int64(2),
        dedup=np.bool_(True),
        deyo_plpd_threshold=-2.0,
        sar_reset_threshold=-1.0,
        eata_entropy_margin=0.0,
    )
    assert config.steps == 2


def test_each_set_of_allowed_values_is_one_constant():
    assert decoupling.MODES is config_lib.DECOUPLING_MODES
    assert FIELD_CHECKS["decoupling_mode"][0] is config_lib.DECOUPLING_MODES
    assert FIELD_CHECKS["nonfinite_inputs"][0] is config_lib.NONFINITE_POLICIES


def test_a_reference_refresh_needs_a_reference():
    with pytest.raises(ValueError, match="^reference_refresh_every refreshes a reference"):
        preset("tent", reference_refresh_every=5)
    assert preset("tent", reference_refresh_every=5, record_reference_cosine=True)
    assert preset("rest", reference_refresh_every=5).decoupling
