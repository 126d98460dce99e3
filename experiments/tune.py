"""Tunes every method with the same budget on SynthWorld's VALIDATION split (never the test split).

    python -m experiments.tune [--out docs/tuning.md]
    # or one process per direction (two cores), then the table from both:
    python -m experiments.tune --directions i2t --json i2t.json &
    python -m experiments.tune --directions t2i --json t2i.json; wait
    python -m experiments.tune --render i2t.json t2i.json
    # the oracle's schedule alone:
    python -m experiments.tune --methods '' --out oracle_tuning.md

For each method, every (learning rate, steps per batch) of the grid runs the study's default
query-shift streams (both directions, one stream order) on the validation split; the score
is the mean R@1 over those streams, and the best pair is the method's tuned setting. The
oracle's supervised schedule (learning rate x epochs) is chosen the same way. The table of
every candidate and the choice go to a markdown file, and the dict to paste into
``rest_jax.config.SYNTHWORLD_TUNED`` is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import pathlib
import shlex
import sys
import time

import numpy as np

from experiments import oracle
from experiments.config import StudyConfig
from experiments.main import Runner, single_run

LEARNING_RATES = (3e-4, 1e-3, 3e-3)
STEPS = (1, 3)
METHODS = ("tent", "eata", "sar", "read", "shot", "deyo", "tcr", "rest")
ORACLE_LEARNING_RATES = (3e-3, 1e-2)
ORACLE_EPOCHS = (5, 10)


def streams(cfg: StudyConfig) -> list[dict]:
    """One single-domain run per default shift and direction (stream order ``cfg.seed``)."""
    return [
        single_run(direction, shift, "", cfg.seed)
        for direction in cfg.direction_list()
        for shift in cfg.shift_list(direction)
    ]


def score_method(runner: Runner, method: str, overrides: dict) -> dict[str, float]:
    """Mean R@1 over the validation streams of ``method`` with ``overrides``."""
    runner.cfg = dataclasses.replace(
        runner.cfg, adapt=tuple(f"{method}.{k}={v!r}" for k, v in overrides.items())
    )
    runner.adapters.clear()
    out = {}
    for run in streams(runner.cfg):
        row, _ = runner.run({**run, "method": method})
        out[run["key"]] = row["r1"]
    out["mean"] = float(np.mean(list(out.values())))
    return out


def score_oracle(runner: Runner, learning_rate: float, epochs: int) -> dict[str, float]:
    runner.oracle_config = oracle.OracleConfig(learning_rate=learning_rate, epochs=epochs)
    out = {}
    for run in streams(runner.cfg):
        out[run["key"]] = runner.run_oracle({**run, "method": "oracle"})["r1"]
    out["mean"] = float(np.mean(list(out.values())))
    return out


def run_grid(args) -> dict:
    """Every candidate's per-stream R@1 on the validation split: ``{method: {label: {...}}}``."""
    cfg = StudyConfig(
        split="validation",
        directions=args.directions,
        shifts=tuple(args.shifts or ()),
        source_model=args.source_model,
        hyperparameters="paper",
        max_queries=args.max_queries,
    )
    runner = Runner(cfg, cfg.task_spec().load(cfg))
    grid: dict[str, dict] = {}
    for method in filter(None, args.methods.split(",")):
        for lr, steps in itertools.product(LEARNING_RATES, STEPS):
            result = score_method(runner, method, {"learning_rate": lr, "steps": steps})
            grid.setdefault(method, {})[json.dumps([lr, steps])] = result
            print(method, lr, steps, f"{result['mean']:.2f}", flush=True)
    if args.oracle:
        for lr, epochs in itertools.product(ORACLE_LEARNING_RATES, ORACLE_EPOCHS):
            result = score_oracle(runner, lr, epochs)
            grid.setdefault("oracle", {})[json.dumps([lr, epochs])] = result
            print("oracle", lr, epochs, f"{result['mean']:.2f}", flush=True)
    return grid


def render(grids: list[dict], seconds: float, command: str) -> tuple[str, dict]:
    """The markdown table over every stream of ``grids`` and the chosen settings."""
    merged: dict[str, dict] = {}
    for grid in grids:
        for method, candidates in grid.items():
            for label, result in candidates.items():
                cell = merged.setdefault(method, {}).setdefault(label, {})
                cell.update({k: v for k, v in result.items() if k != "mean"})
    keys = list(dict.fromkeys(k for m in merged.values() for c in m.values() for k in c))
    lines = [
        "# Tuning on the validation split",
        "",
        "Every method gets the same budget: the grid learning rate "
        f"{' / '.join(f'{x:g}' for x in LEARNING_RATES)} x steps per batch "
        f"{' / '.join(map(str, STEPS))}, scored by the mean R@1 over the validation streams "
        "of the table's columns (both directions, SynthWorld's **validation** split, one stream "
        "order, seed 0). The test split only gives final numbers. The oracle's supervised "
        "schedule (learning rate "
        f"{' / '.join(f'{x:g}' for x in ORACLE_LEARNING_RATES)} x epochs "
        f"{' / '.join(map(str, ORACLE_EPOCHS))}, at the source model's own temperature) is "
        "chosen the same way.",
        "",
        f"Command: `{command}` ({seconds:.0f} s in all).",
        "",
        "| method | candidate | " + " | ".join(keys) + " | mean |",
        "|" + "---|" * (len(keys) + 3),
    ]
    chosen = {}
    for method, candidates in merged.items():
        best = None
        for label, cells in candidates.items():
            mean = float(np.mean([cells[k] for k in keys if k in cells]))
            a, b = json.loads(label)
            name = "epochs" if method == "oracle" else "steps"
            lines.append(
                f"| {method} | lr={a:g}, {name}={b} | "
                + " | ".join(f"{cells[k]:.1f}" if k in cells else "" for k in keys)
                + f" | {mean:.2f} |"
            )
            if best is None or mean > best[0]:
                best = (mean, {"learning_rate": a, name: b})
        chosen[method] = best[1]
    lines += [
        "",
        "Chosen (`rest_jax.config.SYNTHWORLD_TUNED`; the oracle's in "
        "`experiments.oracle.OracleConfig`):",
        "",
        "```json",
        json.dumps(chosen, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines), chosen


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m experiments.tune", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", default="docs/tuning.md")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--directions", default="i2t,t2i")
    parser.add_argument(
        "--shifts", action="append", help="DIRECTION=SPEC,SPEC (default: the study's)"
    )
    parser.add_argument("--source-model", default="")
    parser.add_argument("--max-queries", type=int, default=0, help="images of the split used")
    parser.add_argument("--no-oracle", dest="oracle", action="store_false")
    parser.add_argument("--json", help="write the raw grid here (and no markdown)")
    parser.add_argument(
        "--render", nargs="+", help="render the markdown from raw grids written with --json"
    )
    parser.add_argument("--seconds", type=float, default=0.0, help="with --render: time spent")
    argv_used = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv_used)
    if args.render:
        grids = [json.loads(pathlib.Path(p).read_text()) for p in args.render]
        command = (
            "python -m experiments.tune --directions i2t --shifts i2t=gaussian_noise@3,fog@1 "
            "--json i2t.json` and `python -m experiments.tune --directions t2i --json t2i.json` "
            "(two processes at once), then `python -m experiments.tune --render i2t.json "
            "t2i.json"
        )
        text, _ = render(grids, args.seconds, command)
    else:
        start = time.perf_counter()
        grid = run_grid(args)
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(grid, indent=1))
            return
        command = " ".join(["python -m experiments.tune", *map(shlex.quote, argv_used)])
        text, _ = render([grid], time.perf_counter() - start, command)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
