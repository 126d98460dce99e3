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


def markdown(rows: list[dict], description: dict) -> str:
    out = [
        f"# Study results ({description.get('dataset')}, {description.get('split')} split: "
        f"{description.get('images')} images, {description.get('captions')} captions)",
        "",
    ]
    for direction in ("i2t", "t2i"):
        drows = [r for r in rows if r["direction"] == direction]
        if not drows:
            continue
        out.append(f"## {direction}: R@1 under query shift (severity/level as named)")
        qs = [r for r in drows if r["group"] in ("qs", "clean")]
        shifts = []
        for r in qs:
            if r["shifts"][0] not in shifts:
                shifts.append(r["shifts"][0])
        body = []
        for method in _methods(qs):
            cells = {r["shifts"][0]: r["r1"] for r in qs if r["method"] == method}
            shifted = [cells[s] for s in shifts if s != "clean" and s in cells]
            body.append(
                [method]
                + [_fmt(cells.get(s)) for s in shifts]
                + [_fmt(np.mean(shifted)) if shifted else ""]
            )
        out += [_table(["method"] + shifts + ["mean (shifted)"], body), ""]
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
                [r["method"], _fmt(r["r1"])]
                + [_fmt(r["per_domain"][d]["r1"]) for d in domains]
                + [_fmt(r.get("forgetting_r1"))]
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
                        int(r["shifts"][0].split("@")[1]): r["r1"]
                        for r in sev
                        if r["method"] == method and r["shifts"][0].startswith(name + "@")
                    }
                    body.append([name, method] + [_fmt(cells.get(s)) for s in range(1, 6)])
            out += [_table(["corruption", "method", "1", "2", "3", "4", "5"], body), ""]
    return "\n".join(out)
