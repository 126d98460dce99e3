"""Shared fixtures: float64 scope and TCR's parity cases (tests/data/tcr_cases.json)."""

from __future__ import annotations

import json
import os
import pathlib

import jax
import pytest

# The suite is mostly XLA compilation of tiny programs. XLA's newer CPU fusion emitters compile
# them about 40% slower than the classic ones (the toy tcr step: 2.4 s -> 1.5 s), and LLVM at
# -O1 about 20% faster than at the default -O3 (a tiny CLIP rest step: 5.2 s -> 4.0 s) with the
# same floating-point semantics. Not -O0: it turned READ's second inner step on the float64 toy
# stream into NaN where -O1..-O3 agree, so it is not the program users run. Turning LLVM's
# expensive passes off as well looked 40% faster on a busy machine but was not on an idle one
# (4 compile-heavy test files: 286 CPU-s without, 300 with), so it is not used.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=1 --xla_cpu_use_fusion_emitters=false"
    " --xla_backend_optimization_level=1",
)

PARITY = pathlib.Path(__file__).resolve().parent / "data" / "tcr_cases.json"
"""TCR's reference numbers (cases P1-P7), shipped with the tests; ``REST_JAX_PARITY`` overrides."""


def _find_parity() -> pathlib.Path:
    env = os.environ.get("REST_JAX_PARITY")
    path = pathlib.Path(env) if env else PARITY
    if not path.exists():
        pytest.fail(f"parity fixtures not found at {path}")
    return path


@pytest.fixture(scope="session")
def parity():
    return json.loads(_find_parity().read_text())


@pytest.fixture
def x64():
    """Runs the test with float64 enabled."""
    with jax.enable_x64(True):
        yield
