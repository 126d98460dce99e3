"""The study's task interface: a task with its own direction, shifts and two-input queries
runs through the whole study (every group, oracle, tables, summary) without any change to the
study, the methods or the step engine."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from toy import toy_apply, toy_problem

from experiments import config as study_config
from experiments import main as main_job
from experiments import tasks
from experiments.tasks import Task, TaskData

N_QUERIES = 24


def _two_input_encoder(params, inputs):
    # The query is a dict of two halves; a bare array would fail here.
    return toy_apply(params, jnp.concatenate([inputs["left"], inputs["right"]], axis=-1))


def _check_shift(spec: str, direction: str) -> None:
    name, _, level = spec.partition("@")
    if direction != "x2y" or name not in ("offset", "scale") or level not in "12345":
        raise ValueError(f"{spec}: not a toy shift of {direction}")


def _load(cfg) -> TaskData:
    params, gallery, _, clean = toy_problem(n_gallery=12, n_queries=N_QUERIES)
    base = np.asarray(clean)[np.arange(N_QUERIES) % 12]

    def query_inputs(direction, spec, seed):
        x = base.copy()
        if spec != "clean":
            name, _, level = spec.partition("@")
            rng = np.random.default_rng(seed)
            x = x + int(level) * 0.4 if name == "offset" else x * (1 + 0.3 * int(level))
            x = x + 0.05 * rng.standard_normal(x.shape)
        return {"left": x[:, :4].astype(np.float32), "right": x[:, 4:].astype(np.float32)}

    g = np.asarray(gallery)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    pairs = query_inputs("x2y", "clean", 0)
    return TaskData(
        directions=("x2y",),
        query_side=lambda d: (_two_input_encoder, params, [(r"^ln/", True)]),
        query_inputs=query_inputs,
        galleries={"x2y": g},
        relevance={"x2y": (np.arange(N_QUERIES) % 12)[:, None]},
        source_pairs={"x2y": ({k: v[:8] for k, v in pairs.items()}, g[:8])},
        temperature=0.05,
        description={"dataset": "toy", "split": "test", "contents": f"{N_QUERIES} pairs"},
    )


TOY = Task(
    name="toy-pairs",
    directions=("x2y",),
    default_shifts={"x2y": "offset@3,scale@2"},
    full_grid=lambda d: [f"{n}@{s}" for n in ("offset", "scale") for s in range(1, 6)],
    check_shift=_check_shift,
    load=_load,
    severity_sweep="offset",
)


@pytest.fixture
def toy_task(monkeypatch):
    monkeypatch.setitem(tasks.TASKS, TOY.name, TOY)
    monkeypatch.setitem(study_config.CHOICES, "task", tuple(tasks.TASKS))


def test_a_two_input_task_runs_the_whole_study(tmp_path, toy_task):
    out = main_job.main(
        [
            "--task", "toy-pairs", "--name", "toy", "--output-dir", str(tmp_path),
            "--methods", "source,tent", "--shifts", "x2y=offset@3", "--severity-methods",
            "source,tent", "--diverse", "mixed", "--diverse-methods", "source",
            "--diverse-total", "24", "--batch-size", "8", "--stream-seeds", "0,1",
            "--no-reference-cosine",
        ]
    )  # fmt: skip
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    groups = {r["group"] for r in rows}
    assert groups == {"clean", "qs", "severity", "mixed", "oracle", "ablation"}
    assert {r["direction"] for r in rows} == {"x2y"} and {r["seed"] for r in rows} == {0, 1}
    # offset@3 is a query shift of both methods: run once, in the qs group
    assert {r["shifts"][0] for r in rows if r["group"] == "severity"} == {
        f"offset@{s}" for s in (1, 2, 4, 5)
    }
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"x2y"} and set(summary["x2y"]) == {"source", "tent", "oracle"}
    entry = summary["x2y"]["tent"]
    assert entry["mean_shifted_r10"] >= entry["mean_shifted_r1"] and entry["seeds"] == 2
    table = (out / "table.md").read_text()
    assert "(toy, test split: 24 pairs)" in table and "## x2y: R@1 under query shift" in table
    assert "## x2y: REST ablations" in table and "## x2y: R@1 against severity" in table
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["task"] == "toy-pairs" and resolved["shifts"] == {"x2y": ["offset@3"]}


def test_the_grid_comes_from_the_task(toy_task):
    cfg = study_config.parse_args(["--task", "toy-pairs"])
    assert cfg.direction_list() == ["x2y"] and cfg.diverse_direction_list() == ["x2y"]
    assert cfg.shift_list("x2y") == ["offset@3", "scale@2"]
    assert cfg.severity_sweep_list() == ["offset"]
    cfg = study_config.parse_args(["--task", "toy-pairs", "--shifts", "x2y=all"])
    assert cfg.shift_list("x2y") == TOY.full_grid("x2y")
    default = study_config.parse_args([])
    assert default.direction_list() == ["i2t", "t2i"] and default.severity_sweep_list() == [
        "gaussian_noise"
    ]


def test_a_tasks_shifts_are_checked_by_the_task(tmp_path, toy_task, capsys):
    with pytest.raises(SystemExit):
        main_job.main(
            ["--task", "toy-pairs", "--output-dir", str(tmp_path), "--shifts", "x2y=blur@3"]
        )
    assert "--shifts x2y: blur@3: not a toy shift of x2y" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
