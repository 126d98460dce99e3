"""How much room LayerNorm-only adaptation has on a direction's shifts (validation split).

    python -m experiments.oracle_room --shifts t2i=keyboard@7,ocr@7 --shifts i2t=fog@1

For each shift, the oracle (supervised tuning of the adapted LayerNorms with the true pairs on
the first half of the stream, ``experiments/oracle.py``) runs at several learning rates and
over several stream orders; each cell is its R@1 on the second half and its gain over the
unadapted source model on the same half, mean ± std over the stream orders. A shift where no
learning rate beats the source model leaves test-time adaptation of those parameters nothing
to win back. ``--parameters all`` tunes every parameter of the query tower instead: whether
labels can win anything back at all, with that many queries.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import shlex
import sys
import time

import numpy as np

from experiments import oracle
from experiments.config import StudyConfig
from experiments.main import Runner, single_run
from experiments.tasks.base import TaskData

LEARNING_RATES = (3e-4, 1e-3, 3e-3)
STREAM_SEEDS = (0, 1, 2)
EVERY_PARAMETER = ((r".*", True),)
TUNED = {"layernorm": "the adapted LayerNorms", "all": "every query-tower parameter"}


def tuning_every_parameter(data: TaskData) -> TaskData:
    """``data`` whose query towers adapt every parameter, not only their LayerNorms."""

    def query_side(direction: str):
        encoder, params, _ = data.query_side(direction)
        return encoder, params, EVERY_PARAMETER

    return dataclasses.replace(data, query_side=query_side)


def measure(runner: Runner, direction: str, shift: str, learning_rate: float, epochs: int, seed):
    """(oracle R@1, source R@1) on the second half of the stream of ``shift`` in order ``seed``."""
    runner.oracle_config = oracle.OracleConfig(learning_rate=learning_rate, epochs=epochs)
    row = runner.run_oracle(single_run(direction, shift, "oracle", seed, group="oracle"))
    return row["r1"], row["source_r1"]


def cell(pairs: list[tuple[float, float]]) -> str:
    """``oracle R@1 (gain ± std)`` over stream orders, from (oracle, source) pairs."""
    oracle_r1 = np.mean([o for o, _ in pairs])
    gains = [o - s for o, s in pairs]
    return f"{oracle_r1:.1f} ({np.mean(gains):+.1f} ± {np.std(gains):.1f})"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.oracle_room", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--shifts", action="append", required=True, help="DIRECTION=SPEC,SPEC")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--learning-rates",
        default=",".join(f"{lr:g}" for lr in LEARNING_RATES),
        help="comma-separated learning rates of the oracle",
    )
    parser.add_argument(
        "--stream-seeds",
        default=",".join(map(str, STREAM_SEEDS)),
        help="comma-separated stream orders each cell averages over",
    )
    parser.add_argument(
        "--parameters",
        choices=tuple(TUNED),
        default="layernorm",
        help="what the oracle tunes: the adapted LayerNorms, or every query-tower parameter",
    )
    parser.add_argument("--out", default="", help="also write the markdown table here")
    argv_used = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv_used)
    learning_rates = [float(x) for x in args.learning_rates.split(",")]
    seeds = [int(x) for x in args.stream_seeds.split(",")]
    given = StudyConfig(shifts=tuple(args.shifts)).shift_overrides()
    cfg = StudyConfig(split="validation", shifts=tuple(args.shifts), directions=",".join(given))
    data = cfg.task_spec().load(cfg)
    if args.parameters == "all":
        data = tuning_every_parameter(data)
    runner = Runner(cfg, data)
    start = time.perf_counter()
    header = [f"oracle lr={lr:g}" for lr in learning_rates]
    lines = [
        "| direction | shift | source | " + " | ".join(header) + " |",
        "|" + "---|" * (len(header) + 3),
    ]
    for direction in cfg.direction_list():
        for shift in cfg.shift_list(direction):
            pairs = [
                [measure(runner, direction, shift, lr, args.epochs, s) for s in seeds]
                for lr in learning_rates
            ]
            source = np.mean([s for _, s in pairs[0]])
            cells = " | ".join(cell(p) for p in pairs)
            lines.append(f"| {direction} | {shift} | {source:.1f} | {cells} |")
            print(lines[-1], flush=True)
    command = " ".join(["python -m experiments.oracle_room", *map(shlex.quote, argv_used)])
    text = "\n".join(
        lines
        + [
            "",
            f"Validation split; each cell: R@1 on the second half of the stream (gain over the "
            f"source model on the same half), mean ± std over stream orders "
            f"{', '.join(map(str, seeds))}; {args.epochs} epochs at the source model's "
            f"temperature, tuning {TUNED[args.parameters]}. Command: `{command}` "
            f"({time.perf_counter() - start:.0f} s).",
        ]
    )
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
