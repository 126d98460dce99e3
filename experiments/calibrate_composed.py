"""How much each shift costs the composed source model: R@1 and R@10 for every shift.

    python -m experiments.calibrate_composed [--split validation] [--out FILE.md]

Composed queries of the world (reference image + modification text, the towers and the
shipped combiner, or ``--combiner zero-shot``) under every shift of the composed task's full
grid: the 16 image corruptions at severities 1-5 on the reference, every text corruption at
its levels on the modification. Each cell is the source model's R@1 (R@10) and the share of
clean R@1 it loses. The composed task's default shifts are chosen from this table on the
validation split, never the test split, as for image-text (docs/calibration.md).
"""

from __future__ import annotations

import argparse
import time

from experiments import study
from experiments.calibrate import grid_cells, grid_table, write_report
from experiments.config import StudyConfig
from experiments.tasks import composed, image_text

# Image-and-text pairs measured for the default grid's one two-input shift.
BOTH_CANDIDATES = (
    "gaussian_noise@2:ocr@7",
    "gaussian_noise@2:word_deletion@0.3",
    "brightness@4:ocr@7",
    "brightness@4:word_deletion@0.3",
    "pixelate@4:keyboard@7",
    "zoom_blur@4:keyboard@7",
)


def _cell(metrics: dict, clean: dict) -> str:
    loss = 100 * (1 - metrics["r1"] / clean["r1"])
    return f"{metrics['r1']:.1f} ({metrics['r10']:.1f}) {loss:.0f}%"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m experiments.calibrate_composed", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--split", default="validation")
    parser.add_argument("--out", default="docs/calibration_composed.md")
    parser.add_argument("--combiner", default="auto")
    parser.add_argument("--max-queries", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = StudyConfig(
        task="composed", split=args.split, combiner=args.combiner, max_queries=args.max_queries
    )
    data = composed.load(cfg)
    start = time.perf_counter()
    direction = composed.DIRECTION
    encoder, params, _ = data.query_side(direction)
    gallery, relevant = data.galleries[direction], data.relevance[direction]

    def source(spec):
        inputs = data.query_inputs(direction, spec, 0)
        return study.clean_retrieval(encoder, params, inputs, gallery, relevant)

    clean = source("clean")
    lines = [
        f"# What each shift costs the composed source model ({args.split} split)",
        "",
        f"R@1 (R@10) of the unadapted composed model ({data.description['composition']}), and "
        "the share of its clean R@1 that the shift loses. "
        f"{data.description['contents']}; ambiguity ceiling of R@1 "
        f"{data.description['ceiling_r1']:.1f}.",
        "",
        f"Clean: R@1 {clean['r1']:.1f}, R@10 {clean['r10']:.1f}.",
        "",
    ]
    for title, grid in (
        ("reference image", image_text.full_grid("i2t")),
        ("modification text", image_text.full_grid("t2i")),
    ):
        cells = grid_cells(grid, source)
        lines += [f"## Shifts of the {title}", ""]
        lines += grid_table(cells, lambda metrics: _cell(metrics, clean))
        lines.append("")
    lines += [
        "## Shifts of both (IMAGE:TEXT)",
        "",
        "| shift | R@1 (R@10) loss |",
        "|---|---|",
    ]
    for spec in BOTH_CANDIDATES:
        lines.append(f"| {spec} | {_cell(source(spec), clean)} |")
    lines.append("")
    command = f"python -m experiments.calibrate_composed --split {args.split}"
    write_report(lines, args.out, command, start)


if __name__ == "__main__":
    main()
