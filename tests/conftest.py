"""Shared fixtures: float64 scope and TCR's parity cases (tests/data/tcr_cases.json)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

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

# Many tests compile the same programs: the same toy step in two xdist workers, the same
# programs in the processes the tests start. JAX's persistent compilation cache, in a
# directory that lives for one run of the suite and is shared by its workers and their
# subprocesses (they inherit the variable), compiles each of them once: the suite took 221 s
# against 263 s without it, back to back. Only programs that take 0.1 s or more to compile
# are kept: most of the ~2,600 compiles of a run are single eager operations (~0.02 s), each
# cheaper to compile again than to write and read back. A directory the caller names is used
# as it is.
_OWN_CACHE_ENV = "REST_JAX_TEST_CACHE_OWNER"


def pytest_configure(config):
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rest_jax_xla_cache_")
        os.environ[_OWN_CACHE_ENV] = str(os.getpid())
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )


def pytest_unconfigure(config):
    if os.environ.get(_OWN_CACHE_ENV) == str(os.getpid()):
        shutil.rmtree(os.environ.pop("JAX_COMPILATION_CACHE_DIR"), ignore_errors=True)
        del os.environ[_OWN_CACHE_ENV]


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
