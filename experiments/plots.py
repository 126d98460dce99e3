"""The study's plots (matplotlib, Agg backend): PNG files under ``runs/<name>/plots``."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _trace(out: pathlib.Path, key: str):
    path = out / "traces" / (key.replace("|", "__").replace("@", "_") + ".npz")
    return dict(np.load(path)) if path.exists() else None


def r1_by_corruption(rows, out, direction):
    qs = [
        r for r in rows if r["direction"] == direction and r["group"] in ("qs", "clean", "oracle")
    ]
    if not qs:
        return
    shifts = list(dict.fromkeys(r["shifts"][0] for r in qs))
    methods = list(dict.fromkeys(r["method"] for r in qs))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(shifts)), 4))
    for i, m in enumerate(methods):
        vals = {r["shifts"][0]: r for r in qs if r["method"] == m}
        ax.bar(
            np.arange(len(shifts)) + i * width,
            [vals[s]["r1"] if s in vals else 0 for s in shifts],
            width,
            yerr=[vals[s].get("r1_std", 0) if s in vals else 0 for s in shifts],
            label=m,
        )
    ax.set_xticks(np.arange(len(shifts)) + 0.4 - width / 2, shifts, rotation=30, ha="right")
    ax.set_ylabel("R@1 (%)")
    ax.set_title(f"{direction}: R@1 per shift by method")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(out / "plots" / f"r1_by_shift_{direction}.png", dpi=110)
    plt.close(fig)


def _directions(rows) -> list[str]:
    """The study's directions in order; the first is the task's primary one."""
    return list(dict.fromkeys(r["direction"] for r in rows))


def r1_vs_severity(rows, out):
    swept = [r["direction"] for r in rows if r["group"] == "severity"]
    if not swept:
        return
    direction = swept[0]
    sev = [r for r in rows if r["direction"] == direction and r["group"] in ("severity", "qs")]
    names = sorted({r["shifts"][0].split("@")[0] for r in rows if r["group"] == "severity"})
    if not names:
        return
    methods = list(dict.fromkeys(r["method"] for r in rows if r["group"] == "severity"))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for m in methods:
            pts = sorted(
                (int(r["shifts"][0].split("@")[1]), r["r1"])
                for r in sev
                if r["method"] == m
                and r["shifts"][0].startswith(name + "@")
                and r["shifts"][0].split("@")[1].isdigit()  # not a two-input shift
            )
            if pts:
                ax.plot(*zip(*pts), marker="o", label=m)
        ax.set_title(f"{direction}, {name}")
        ax.set_xlabel("severity")
        ax.set_ylabel("R@1 (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "plots" / "r1_vs_severity.png", dpi=110)
    plt.close(fig)


def reference_cosine(rows, out):
    """cos(adaptation gradient, reference gradient) along a stream, with/without decoupling."""
    ablated = [r["direction"] for r in rows if r["group"] == "ablation"]
    direction = ablated[0] if ablated else _directions(rows)[0]
    qs = [r for r in rows if r["direction"] == direction and r["group"] in ("qs", "ablation")]
    if not qs:
        return
    shift = qs[0]["shifts"][0]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    labels = {
        "tent": "Tent (logged, not decoupled)",
        "rest-no_decoupling": "REST without decoupling (logged)",
        "rest": "REST with decoupling (before projection)",
    }
    drawn = False
    for r in qs:
        if r["method"] in labels and r["shifts"][0] == shift:
            trace = _trace(out, r.get("trace_key", r["key"]))
            if trace and "reference_cosine" in trace:
                ax.plot(trace["reference_cosine"].reshape(-1), label=labels[r["method"]], lw=1)
                drawn = True
    if not drawn:
        plt.close(fig)
        return
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("optimisation step along the stream")
    ax.set_ylabel("cos(g, r)")
    ax.set_title(f"{direction} {shift}: adaptation vs pre-training gradient")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "plots" / "reference_cosine.png", dpi=110)
    plt.close(fig)


def diagnostics(rows, out):
    """Uniformity, gap and consistency correlation of shifted queries: source vs after REST."""
    picked = {}
    for r in rows:
        if r["group"] == "qs" and r["method"] == "rest" and "diagnostics_after" in r:
            picked.setdefault(r["direction"], r)
    if not picked:
        return
    names = ("uniformity", "gap", "consistency_correlation")
    fig, axes = plt.subplots(len(picked), 3, figsize=(10, 3 * len(picked)), squeeze=False)
    for row_axes, (direction, r) in zip(axes, picked.items()):
        for ax, name in zip(row_axes, names):
            vals = [r["diagnostics_source"][name], r["diagnostics_after"][name]]
            ax.bar(["source", "after REST"], vals, color=["tab:gray", "tab:blue"])
            ax.set_title(f"{direction} {r['shifts'][0]}: {name}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "plots" / "query_diagnostics.png", dpi=110)
    plt.close(fig)


def make_all(rows, out: pathlib.Path):
    out = pathlib.Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for direction in _directions(rows):
        r1_by_corruption(rows, out, direction)
    r1_vs_severity(rows, out)
    reference_cosine(rows, out)
    diagnostics(rows, out)
