"""Markdown tables of a study's results rows."""

from __future__ import annotations

import numpy as np


def _methods(rows):
    seen = []
    for r in rows:
        if r["method"] not in seen:
            seen.append(r["method"])
    return seen


def _table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _fmt(x):
    return "" if x is None else f"{x:.1f}"


def _fmt_std(row, metric="r1"):
    """``mean ± std`` of a metric of an aggregated row (``mean`` alone for a single seed)."""
    if row is None or metric not in row:
        return ""
    std = row.get(metric + "_std")
    if len(row.get("seeds", [])) > 1 and std is not None:
        return f"{row[metric]:.1f} ± {std:.1f}"
    return f"{row[metric]:.1f}"


ORACLE_NOTE = (
    "`oracle` uses labels: supervised tuning of the same LayerNorm parameters on the first half "
    "of each stream, R@1 on the second half (the ceiling of LayerNorm-only adaptation; not a "
    "test-time method)."
)


def _shift_table(direction: str, qs: list[dict], headline: dict, metric: str) -> list[str]:
    """The query-shift table of one metric (``r1`` or ``r10``): methods x shifts."""
    name = {"r1": "R@1", "r5": "R@5", "r10": "R@10"}[metric]
    shifts = list(dict.fromkeys(r["shifts"][0] for r in qs))
    body = []
    for method in _methods(qs):
        cells = {r["shifts"][0]: r for r in qs if r["method"] == method}
        shifted = [cells[s][metric] for s in shifts if s != "clean" and s in cells]
        h = headline.get(method, {})
        if f"mean_shifted_{metric}" in h:
            mean = f"{h[f'mean_shifted_{metric}']:.1f} ± {h[f'mean_shifted_{metric}_std']:.1f}"
        else:
            mean = _fmt(np.mean(shifted)) if shifted else ""
        body.append([method] + [_fmt_std(cells.get(s), metric) for s in shifts] + [mean])
    return [
        f"## {direction}: {name} under query shift (severity/level as named)",
        _table(["method"] + shifts + ["mean (shifted)"], body),
        "",
    ]


def markdown(rows: list[dict], description: dict, summary: dict | None = None) -> str:
    """The study's tables; ``rows`` are aggregated over stream orders (``aggregate``).

    ``description["table_metrics"]`` (default ``("r1",)``) lists the metrics of the
    query-shift tables (the composed task adds ``r10``, the usual metric of composed
    retrieval)."""
    seeds = max((len(r.get("seeds", [])) for r in rows), default=1)
    out = [
        f"# Study results ({description.get('dataset')}, {description.get('split')} split: "
        f"{description.get('contents')})",
        "",
        f"Every figure is the mean ± std over {seeds} stream orders.",
        "",
    ]
    for direction in dict.fromkeys(r["direction"] for r in rows):
        drows = [r for r in rows if r["direction"] == direction]
        if not drows:
            continue
        qs = [r for r in drows if r["group"] in ("qs", "clean", "oracle")]
        headline = (summary or {}).get(direction, {})
        for metric in description.get("table_metrics", ("r1",)):
            out += _shift_table(direction, qs, headline, metric)
        if any(r["group"] == "oracle" for r in qs):
            out += [ORACLE_NOTE, ""]
        for kind in ("mixed", "continual"):
            div = [r for r in drows if r["group"] == kind]
            if not div:
                continue
            domains = list(div[0].get("per_domain", {}))
            out.append(
                f"## {direction}: diverse shift, `{kind}` stream (R@1; forgetting = clean "
                "R@1 after the stream minus before)"
            )
            body = [
                [r["method"], _fmt_std(r)]
                + [_fmt(r["per_domain"][d]["r1"]) for d in domains]
                + [_fmt_std(r, "forgetting_r1")]
                for r in div
            ]
            out += [_table(["method", "all"] + domains + ["forgetting"], body), ""]
        abl = [r for r in drows if r["group"] == "ablation"]
        if abl:
            out.append(f"## {direction}: REST ablations (mean R@1 over the shifts)")
            variants = {}
            for r in [x for x in qs if x["method"] in ("tcr", "rest") and x["group"] == "qs"] + abl:
                variants.setdefault(r["method"], []).append(r["r1"])
            body = [[m, _fmt(np.mean(v)), len(v)] for m, v in variants.items()]
            out += [_table(["variant", "mean R@1", "shifts"], body), ""]
        sev = [r for r in drows if r["group"] in ("severity", "qs")]
        names = sorted({r["shifts"][0].split("@")[0] for r in drows if r["group"] == "severity"})
        if names:
            out.append(f"## {direction}: R@1 against severity")
            body = []
            for name in names:
                for method in _methods([r for r in drows if r["group"] == "severity"]):
                    cells = {
                        int(r["shifts"][0].split("@")[1]): r
                        for r in sev
                        if r["method"] == method
                        and r["shifts"][0].startswith(name + "@")
                        and r["shifts"][0].split("@")[1].isdigit()  # not a two-input shift
                    }
                    body.append([name, method] + [_fmt_std(cells.get(s)) for s in range(1, 6)])
            out += [_table(["corruption", "method", "1", "2", "3", "4", "5"], body), ""]
    return "\n".join(out)
