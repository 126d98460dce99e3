"""The core library's install and imports leave out the harness's heavy dependencies."""

from __future__ import annotations

import configparser
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEAVY = ("matplotlib", "skimage", "tensorflow_datasets")


def test_core_imports_and_requirements_leave_out_the_harness_dependencies():
    code = (
        "import sys, rest_jax, rest_jax.data, rest_jax.data.synthworld; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    core = setup["options"]["install_requires"]
    for name in ("matplotlib", "scikit-image", "tensorflow-datasets"):
        assert name not in core
    assert "matplotlib" in setup["options.extras_require"]["study"]
    assert "tensorflow-datasets" in setup["options.extras_require"]["tfds"]
