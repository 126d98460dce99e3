"""``python -m experiments.bench_gpu``: see the package docstring."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Before torch loads OpenMP: spinning OpenMP workers made the eager CPU step ~30x slower
# on a busy 2-core machine (no effect on GPU work).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from experiments.bench_gpu.cli import main  # noqa: E402  (after the environment is set)

main()
