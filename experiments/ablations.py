"""REST's ablations: each flips one of REST's parts from the ``rest`` preset.

The study's ablation rows (``experiments/main.py``) and the benchmark's variants
(``experiments/bench_gpu/``) both take them from here. The preset's L_CON is off since the
validation search (docs/rest_defaults.md), so its ablation switches it on. Without
decoupling, cos(g, r) is still recorded: the study plots it. Plain data (no import of
rest_jax), so that the benchmark's torch child stays free of JAX.
"""

from __future__ import annotations

from typing import Any

ABLATIONS: dict[str, dict[str, Any]] = {
    "rest-no_decoupling": dict(decoupling=False, record_reference_cosine=True),
    "rest-no_refinement": dict(num_candidates=1, dedup=False),
    "rest-with_consistency": dict(consistency_weight=1.0),
}
