"""Study rows over several stream orders: mean ± std per run, and the run's ``summary.json``.

Each planned run is executed once per stream-order seed; ``results.jsonl`` holds one row per
(run, seed). :func:`aggregate` folds them into one row per run (every metric as the mean over
seeds with a ``<metric>_std``), and :func:`summary` gives the headline figures per direction
and method, with the spread of the per-seed mean over shifts.
"""

from __future__ import annotations

import numpy as np

METRICS = ("r1", "r5", "r10", "forgetting_r1", "source_r1", "rolled_back")


def _std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def aggregate(rows: list[dict]) -> list[dict]:
    """One row per run key (first-seen order): metrics averaged over seeds, with ``_std``.

    Args:
      rows: per-seed rows, each with ``run_key`` (the key without the seed) and ``seed``.

    Returns:
      Rows with the run's fields, ``seeds``, ``trace_key`` (the first seed's row key), each
      metric of ``METRICS`` present as mean and ``<metric>_std``, and ``per_domain`` R@1 means.
    """
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["run_key"], []).append(row)
    out = []
    for run_key, members in groups.items():
        first = members[0]
        merged = {k: first[k] for k in ("group", "direction", "method", "shifts") if k in first}
        merged.update(key=run_key, trace_key=first["key"], seeds=[m["seed"] for m in members])
        for metric in METRICS:
            values = [m[metric] for m in members if metric in m]
            if values:
                merged[metric] = float(np.mean(values))
                merged[metric + "_std"] = _std(values)
        if "per_domain" in first:
            merged["per_domain"] = {
                d: {"r1": float(np.mean([m["per_domain"][d]["r1"] for m in members]))}
                for d in first["per_domain"]
            }
        for extra in ("diagnostics_after", "diagnostics_source"):
            if extra in first:
                merged[extra] = first[extra]
        out.append(merged)
    return out


def summary(rows: list[dict]) -> dict:
    """``{direction: {method: {clean_r1, mean_shifted_r1, mean_shifted_r1_std, ...}}}``.

    ``mean_shifted_r1`` is the mean over the query-shift rows (group ``qs``; the oracle's own
    group for ``oracle``) of each seed, averaged over seeds; ``mean_shifted_r1_std`` is the
    standard deviation over seeds of that per-seed mean (the same for ``r10``). ``clean_r1``
    and ``clean_r10`` are the source model's (every method starts from it).
    ``mean_forgetting_r1`` (when measured) is the mean change of clean R@1 after each
    query-shift stream.
    """
    out: dict[str, dict] = {}
    for direction in dict.fromkeys(r["direction"] for r in rows):
        drows = [r for r in rows if r["direction"] == direction]
        clean = [r for r in drows if r["group"] == "clean"]
        clean_r1 = float(np.mean([r["r1"] for r in clean])) if clean else None
        clean_r10 = float(np.mean([r.get("r10", np.nan) for r in clean])) if clean else None
        per_method: dict[str, dict] = {}
        for method in dict.fromkeys(r["method"] for r in drows if r["group"] in ("qs", "oracle")):
            by_seed: dict[int, list[dict]] = {}
            for r in drows:
                if r["method"] == method and r["group"] in ("qs", "oracle"):
                    by_seed.setdefault(r["seed"], []).append(r)
            entry = {"clean_r1": clean_r1}
            if clean_r10 is not None and not np.isnan(clean_r10):
                entry["clean_r10"] = clean_r10
            for metric in ("r1", "r10"):
                if any(metric not in r for rs in by_seed.values() for r in rs):
                    continue
                means = [float(np.mean([r[metric] for r in rs])) for rs in by_seed.values()]
                entry[f"mean_shifted_{metric}"] = round(float(np.mean(means)), 2)
                entry[f"mean_shifted_{metric}_std"] = round(_std(means), 2)
            entry.update(seeds=len(by_seed), shifts=len(next(iter(by_seed.values()))))
            forgetting = [
                r["forgetting_r1"] for rs in by_seed.values() for r in rs if "forgetting_r1" in r
            ]
            if forgetting:
                entry["mean_forgetting_r1"] = round(float(np.mean(forgetting)), 2)
            if method == "oracle":
                entry["source_r1_same_half"] = round(
                    float(np.mean([r["source_r1"] for rs in by_seed.values() for r in rs])), 2
                )
                entry["uses_labels"] = True
            per_method[method] = entry
        out[direction] = per_method
    return out
