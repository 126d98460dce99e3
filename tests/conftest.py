"""Shared fixtures: float64 scope, the parity cases, a tiny LayerNorm encoder."""

from __future__ import annotations

import json
import os
import pathlib

import jax
import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

PARITY = pathlib.Path(__file__).resolve().parents[2] / "shared" / "parity" / "tcr_cases.json"


def _find_parity() -> pathlib.Path:
    env = os.environ.get("REST_JAX_PARITY")
    candidates = [pathlib.Path(env)] if env else []
    candidates += [PARITY, pathlib.Path.cwd().parent / "shared" / "parity" / "tcr_cases.json"]
    for path in candidates:
        if path.exists():
            return path
    pytest.fail(f"parity fixtures not found (looked at {[str(c) for c in candidates]})")


@pytest.fixture(scope="session")
def parity():
    return json.loads(_find_parity().read_text())


@pytest.fixture
def x64():
    """Runs the test with float64 enabled."""
    with jax.enable_x64(True):
        yield
