"""How much room LayerNorm-only adaptation has on a direction's shifts (validation split).

    python -m experiments.oracle_room --shifts t2i=keyboard@7,ocr@7 --shifts i2t=fog@1

For each shift, the oracle (supervised tuning of the adapted LayerNorms with the true pairs on
the first half of the stream, ``experiments/oracle.py``) runs at several learning rates; each
cell is its R@1 on the second half next to the unadapted source model's on the same half. A
shift where no learning rate beats the source model leaves test-time adaptation of those
parameters nothing to win back.
"""

from __future__ import annotations

import argparse
import pathlib
import time

from experiments import oracle
from experiments.config import StudyConfig
from experiments.main import Runner, single_run

LEARNING_RATES = (3e-4, 1e-3, 3e-3)


def measure(runner: Runner, direction: str, shift: str, learning_rate: float, epochs: int):
    """(oracle R@1, source R@1) on the second half of the seed-0 stream of ``shift``."""
    runner.oracle_config = oracle.OracleConfig(learning_rate=learning_rate, epochs=epochs)
    row = runner.run_oracle(single_run(direction, shift, "oracle", 0, group="oracle"))
    return row["r1"], row["source_r1"]


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.oracle_room", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--shifts", action="append", required=True, help="DIRECTION=SPEC,SPEC")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="", help="also write the markdown table here")
    args = parser.parse_args(argv)
    given = StudyConfig(shifts=tuple(args.shifts)).shift_overrides()
    cfg = StudyConfig(split="validation", shifts=tuple(args.shifts), directions=",".join(given))
    runner = Runner(cfg, cfg.task_spec().load(cfg))
    start = time.perf_counter()
    header = [f"oracle lr={lr:g}" for lr in LEARNING_RATES]
    lines = [
        "| direction | shift | source | " + " | ".join(header) + " |",
        "|" + "---|" * (len(header) + 3),
    ]
    for direction in cfg.direction_list():
        for shift in cfg.shift_list(direction):
            cells = [measure(runner, direction, shift, lr, args.epochs) for lr in LEARNING_RATES]
            source = cells[0][1]
            lines.append(
                f"| {direction} | {shift} | {source:.1f} | "
                + " | ".join(f"{r1:.1f} ({r1 - source:+.1f})" for r1, _ in cells)
                + " |"
            )
            print(lines[-1], flush=True)
    command = "python -m experiments.oracle_room " + " ".join(f"--shifts {s}" for s in args.shifts)
    text = "\n".join(
        lines
        + [
            "",
            f"Validation split, stream order 0, {args.epochs} epochs; R@1 on the second half "
            f"of each stream. Command: `{command}` ({time.perf_counter() - start:.0f} s).",
        ]
    )
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
