"""Tunes every method with the same budget on SynthWorld's VALIDATION split (never the test split).

    python -m experiments.tune [--out docs/tuning.md]

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
import time

import numpy as np

from experiments import oracle
from experiments.config import StudyConfig
from experiments.data import load_study_data
from experiments.main import Runner

LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2)
STEPS = (1, 3)
METHODS = ("tent", "eata", "sar", "read", "shot", "deyo", "tcr", "rest")
ORACLE_LEARNING_RATES = (1e-3, 3e-3, 1e-2)
ORACLE_EPOCHS = (3, 10)


def streams(cfg: StudyConfig) -> list[dict]:
    """One single-domain run per default shift and direction (stream order ``cfg.seed``)."""
    runs = []
    for direction in cfg.direction_list():
        for shift in cfg.shift_list(direction):
            runs.append(
                dict(
                    group="qs",
                    direction=direction,
                    shifts=[shift],
                    kind="single",
                    seed=cfg.seed,
                    key=f"{direction}|{shift}",
                    run_key=f"{direction}|{shift}",
                )
            )
    return runs


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


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m experiments.tune", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", default="docs/tuning.md")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--image-shifts", default=StudyConfig.image_shifts)
    parser.add_argument("--text-shifts", default=StudyConfig.text_shifts)
    parser.add_argument("--source-model", default="")
    args = parser.parse_args(argv)
    cfg = StudyConfig(
        split="validation",
        image_shifts=args.image_shifts,
        text_shifts=args.text_shifts,
        source_model=args.source_model,
        hyperparameters="paper",
    )
    data = load_study_data(cfg)
    runner = Runner(cfg, data)
    start = time.perf_counter()
    table, chosen = [], {}
    for method in args.methods.split(","):
        best = None
        for lr, steps in itertools.product(LEARNING_RATES, STEPS):
            result = score_method(runner, method, {"learning_rate": lr, "steps": steps})
            table.append((method, f"lr={lr:g}, steps={steps}", result))
            print(method, lr, steps, f"{result['mean']:.2f}", flush=True)
            if best is None or result["mean"] > best[0]:
                best = (result["mean"], {"learning_rate": lr, "steps": steps})
        chosen[method] = best[1]
    best = None
    for lr, epochs in itertools.product(ORACLE_LEARNING_RATES, ORACLE_EPOCHS):
        result = score_oracle(runner, lr, epochs)
        table.append(("oracle", f"lr={lr:g}, epochs={epochs}", result))
        print("oracle", lr, epochs, f"{result['mean']:.2f}", flush=True)
        if best is None or result["mean"] > best[0]:
            best = (result["mean"], {"learning_rate": lr, "epochs": epochs})
    chosen_oracle = best[1]
    keys = [k for k in table[0][2] if k != "mean"]
    lines = [
        "# Tuning on the validation split",
        "",
        "Every method gets the same budget: the grid learning rate "
        f"{' / '.join(f'{x:g}' for x in LEARNING_RATES)} x steps per batch "
        f"{' / '.join(map(str, STEPS))}, scored by the mean R@1 over the default shifts of both "
        "directions on SynthWorld's **validation** split (one stream order). The test split "
        "only gives final numbers. The oracle's supervised schedule (learning rate "
        f"{' / '.join(f'{x:g}' for x in ORACLE_LEARNING_RATES)} x epochs "
        f"{' / '.join(map(str, ORACLE_EPOCHS))}) is chosen the same way.",
        "",
        f"Command: `python -m experiments.tune` ({time.perf_counter() - start:.0f} s).",
        "",
        "| method | candidate | " + " | ".join(keys) + " | mean |",
        "|" + "---|" * (len(keys) + 3),
    ]
    for method, label, result in table:
        lines.append(
            f"| {method} | {label} | "
            + " | ".join(f"{result[k]:.1f}" for k in keys)
            + f" | {result['mean']:.2f} |"
        )
    lines += [
        "",
        "Chosen (`rest_jax.config.SYNTHWORLD_TUNED`, `experiments.oracle.OracleConfig`):",
        "",
        "```json",
        json.dumps({**chosen, "oracle": chosen_oracle}, indent=2),
        "```",
        "",
    ]
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
