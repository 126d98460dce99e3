"""How much each shift costs the source model: R@1 for every corruption and level.

    python -m experiments.calibrate [--split validation] [--out docs/calibration.md]

Image queries (i2t) under the 16 image corruptions at severities 1-5, caption queries (t2i,
first caption per image) under every text corruption at its levels; each cell is the source
model's R@1 and the share of clean R@1 it loses. The default grid's shifts are chosen from
this table on the validation split (a loss between 30% and 80% of clean R@1).
"""

from __future__ import annotations

import argparse
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from experiments import study
from experiments.config import StudyConfig
from experiments.data import load_study_data
from experiments.tasks.image_text import full_grid


def source_r1(data, direction: str, spec: str, rows, gallery, relevant) -> float:
    encoder, params, _ = data.towers.query_side(direction)
    domain = study.parse_domain(spec, direction)
    inputs = study.query_inputs(data.split, direction, domain, data.towers, seed=0)[rows]
    return study.clean_retrieval(encoder, params, inputs, gallery, relevant)["r1"]


def grid_cells(grid: list[str], measure: Callable[[str], Any], label: str = "") -> dict:
    """``{name: {level: measure(spec)}}`` over ``name@level`` specs, printing each as it goes."""
    cells: dict[str, dict] = {}
    for spec in grid:
        name, _, level = spec.partition("@")
        cells.setdefault(name, {})[level] = value = measure(spec)
        shown = value["r1"] if isinstance(value, dict) else value
        print(label, spec, f"{shown:.1f}", flush=True)
    return cells


def r1_cell(r1: float, clean: float) -> str:
    """``"R@1 (share of clean R@1 lost)"``, e.g. ``"12.0 (60%)"``."""
    lost = f"{100 * (1 - r1 / clean):.0f}%" if clean > 0 else "n/a"
    return f"{r1:.1f} ({lost})"


def grid_table(cells: dict[str, dict], cell: Callable[[Any], str]) -> list[str]:
    """A markdown table of :func:`grid_cells`: a row per corruption, a column per level."""
    levels = list(dict.fromkeys(level for by in cells.values() for level in by))
    lines = ["| corruption | " + " | ".join(levels) + " |", "|" + "---|" * (len(levels) + 1)]
    for name, by in cells.items():
        row = [cell(by[level]) if level in by else "" for level in levels]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return lines


def write_report(lines: list[str], out: str, command: str, start: float) -> None:
    """Ends ``lines`` with the command and its time since ``start``, writes them to ``out``
    (a markdown file) and prints them."""
    lines = [*lines, f"Command: `{command}` ({time.perf_counter() - start:.0f} s)."]
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m experiments.calibrate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--split", default="validation")
    parser.add_argument("--out", default="docs/calibration.md")
    parser.add_argument("--source-model", default="")
    args = parser.parse_args(argv)
    cfg = StudyConfig(split=args.split, source_model=args.source_model)
    data = load_study_data(cfg)
    start = time.perf_counter()
    ids = data.split.caption_image_ids
    first = np.array([np.flatnonzero(ids == i)[0] for i in range(len(data.split.images))])
    lines = [
        f"# What each shift costs the source model ({args.split} split)",
        "",
        "R@1 of the unadapted source model, and in brackets the share of its clean R@1 that the "
        "shift loses. i2t: image queries (1000) against the 5000 clean captions; t2i: the first "
        "caption of each image (1000) against the 1000 clean images.",
        "",
    ]
    for direction in ("i2t", "t2i"):
        rows = slice(None) if direction == "i2t" else first
        gallery = study.gallery_embeddings(data.split, direction, data.towers)
        relevant = study.relevance(data.split, direction)[rows]
        clean = source_r1(data, direction, "clean", rows, gallery, relevant)
        cells = grid_cells(
            full_grid(direction),
            lambda spec, d=direction, q=rows, g=gallery, r=relevant: source_r1(
                data, d, spec, q, g, r
            ),
            direction,
        )
        lines += [f"## {direction} (clean R@1 {clean:.1f})", ""]
        lines += grid_table(cells, lambda r1, clean=clean: r1_cell(r1, clean))
        lines.append("")
    write_report(lines, args.out, f"python -m experiments.calibrate --split {args.split}", start)


if __name__ == "__main__":
    main()
