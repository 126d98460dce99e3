"""How much each shift costs the audio-visual source model: R@1 for every video and audio shift.

    python -m experiments.calibrate_video_audio [--split validation] [--out FILE.md]

The world's clips (``rest_jax.data.avworld``) with the shipped source model (or
``--source-model DIR``): v2a, every video corruption at severities 1-5 on the video queries
against the clean soundtracks; a2v, every audio noise at its five SNRs on the soundtracks
against the clean videos. Each cell is the source model's R@1 and the share of its clean R@1
that the shift loses. The video-audio task's default shifts are chosen from this table on the
validation split, never the test split (docs/calibration.md says why).
"""

from __future__ import annotations

import argparse
import time

from experiments import study
from experiments.calibrate import grid_cells, grid_table, r1_cell, write_report
from experiments.config import StudyConfig
from experiments.tasks import video_audio


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m experiments.calibrate_video_audio", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--split", default="validation")
    parser.add_argument("--out", default="docs/calibration_video_audio.md")
    parser.add_argument("--source-model", default="")
    parser.add_argument("--max-queries", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = StudyConfig(
        task="video-audio",
        split=args.split,
        source_model=args.source_model,
        directions="v2a,a2v",
        max_queries=args.max_queries,
    )
    data = video_audio.load(cfg)
    start = time.perf_counter()
    ceiling = data.description["ceiling_r1"]
    lines = [
        f"# What each shift costs the audio-visual source model ({args.split} split)",
        "",
        "R@1 of the unadapted source model, and in brackets the share of its clean R@1 that the "
        f"shift loses. {data.description['contents']}: each clip's video against every clean "
        "soundtrack (v2a) and each soundtrack against every clean video (a2v). Ceiling of R@1 "
        f"(clips that sound alike): v2a {ceiling['v2a']:.1f}, a2v {ceiling['a2v']:.1f}.",
        "",
    ]
    for direction in video_audio.DIRECTIONS:
        encoder, params, _ = data.query_side(direction)
        gallery, relevant = data.galleries[direction], data.relevance[direction]

        def r1(spec, d=direction, encoder=encoder, params=params, g=gallery, rel=relevant):
            inputs = data.query_inputs(d, spec, 0)
            return study.clean_retrieval(encoder, params, inputs, g, rel)["r1"]

        clean = r1("clean")
        cells = grid_cells(video_audio.full_grid(direction), r1, direction)
        lines += [f"## {direction} (clean R@1 {clean:.1f})", ""]
        lines += grid_table(cells, lambda v, clean=clean: r1_cell(v, clean))
        lines.append("")
    command = f"python -m experiments.calibrate_video_audio --split {args.split}"
    write_report(lines, args.out, command, start)


if __name__ == "__main__":
    main()
