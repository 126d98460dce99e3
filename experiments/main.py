"""The main job: source model, clean retrieval, query shift, and what each method wins back.

    python -m experiments.main                       # the embedded SynthWorld study
    python -m experiments.main --shifts i2t=all --shifts t2i=all   # the full grid
    python -m experiments.main --dataset coco --data-dir DIR --checkpoint CLIP_DIR
    python -m experiments.main --task NAME           # another task (experiments/tasks/)

Writes ``runs/<name>/``: ``config.json`` (resolved config, versions, device, seed),
``results.jsonl`` (one row per run), ``table.md`` and ``plots/``. An interrupted run resumes:
rows already in ``results.jsonl`` are not run again. One study at a time per run directory;
rerunning a name with another configuration refuses unless ``--restart`` is given
(experiments/run_dir.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import platform
import sys
import time

import jax
import numpy as np
from tqdm.auto import tqdm

import rest_jax
from experiments import aggregate, oracle, plots, report, run_dir, study
from experiments.ablations import ABLATIONS
from experiments.config import StudyConfig, adapt_overrides, parse_args
from experiments.lists import comma_list
from experiments.tasks import TaskData
from experiments.validate import validate_study_config

log = logging.getLogger("rest_jax.study")


def versions() -> dict[str, str]:
    import flax
    import optax

    return {
        "rest_jax": rest_jax.__version__,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
    }


# Methods whose cos(g, r) the study records without decoupling (the reference-cosine plot).
LOGGED_REFERENCE_COSINE = ("tent",)


def adapt_config(cfg: StudyConfig, method: str, **extra) -> rest_jax.AdaptConfig:
    base = rest_jax.preset(method.split("-")[0], cfg.resolved_hyperparameters())
    if cfg.reference_cosine and method in LOGGED_REFERENCE_COSINE:
        extra = {"record_reference_cosine": True, **extra}
    return base.replace(**{**adapt_overrides(cfg, method), **extra})


def plan_runs(cfg: StudyConfig) -> list[dict]:
    """Every run of the study, in order: (group, direction, method, stream spec)."""
    runs = []
    primary = cfg.primary_direction()
    for direction in cfg.direction_list():
        shifts = cfg.shift_list(direction)
        runs.append(dict(group="clean", direction=direction, method="source", shifts=["clean"]))
        for method in cfg.method_list():
            for shift in shifts:
                runs.append(dict(group="qs", direction=direction, method=method, shifts=[shift]))
        if direction == primary:
            for name in cfg.severity_sweep_list():
                for method in comma_list(cfg.severity_methods):
                    for severity in range(1, 6):
                        spec = f"{name}@{severity}"
                        if spec not in shifts or method not in cfg.method_list():
                            runs.append(
                                dict(
                                    group="severity",
                                    direction=direction,
                                    method=method,
                                    shifts=[spec],
                                )
                            )
        for kind in comma_list(cfg.diverse) if direction in cfg.diverse_direction_list() else []:
            for method in comma_list(cfg.diverse_methods):
                runs.append(dict(group=kind, direction=direction, method=method, shifts=shifts))
        if cfg.oracle:
            for shift in shifts:
                runs.append(
                    dict(group="oracle", direction=direction, method="oracle", shifts=[shift])
                )
        if cfg.ablations and direction == primary:
            for variant in ABLATIONS:
                for shift in shifts:
                    runs.append(
                        dict(group="ablation", direction=direction, method=variant, shifts=[shift])
                    )
    seeded = []
    for run in runs:
        kind = run["group"] if run["group"] in ("mixed", "continual") else "single"
        run["kind"] = kind
        run["run_key"] = "|".join(
            [run["group"], run["direction"], run["method"], "+".join(run["shifts"])]
        )
        for seed in cfg.stream_seed_list():
            seeded.append({**run, "seed": seed, "key": f"{run['run_key']}|seed={seed}"})
    return seeded


def single_run(direction: str, shift: str, method: str, seed: int, group: str = "qs") -> dict:
    """A run of one method on one shift's stream (stream order ``seed``), outside a plan
    (tuning, the defaults search, the oracle's room)."""
    key = f"{direction}|{shift}"
    return dict(
        group=group,
        direction=direction,
        method=method,
        shifts=[shift],
        kind="single",
        seed=seed,
        key=key,
        run_key=key,
    )


class Runner:
    """Holds a task's data, one adapter per (direction, method) and the shifted query sets."""

    def __init__(self, cfg: StudyConfig, data: TaskData):
        self.cfg = cfg
        self.data = data
        self.adapters: dict[tuple[str, str], rest_jax.Adapter] = {}
        self.inputs: dict[tuple[str, str], np.ndarray] = {}
        self.galleries = data.galleries
        self.relevant = data.relevance
        self._clean_r1: dict[str, float] = {}
        self.oracle_config = oracle.OracleConfig()

    def adapter(self, direction: str, method: str) -> rest_jax.Adapter:
        key = (direction, method)
        if key not in self.adapters:
            encoder, params, rules = self.data.query_side(direction)
            config = adapt_config(self.cfg, method, **ABLATIONS.get(method, {}))
            self.adapters[key] = rest_jax.Adapter.create(
                encoder,
                params,
                self.galleries[direction],
                config=config,
                rules=rules,
                source=self.data.source_pairs[direction],
                seed=self.cfg.seed,
            )
        return self.adapters[key]

    def clean_r1(self, direction: str, adapter: rest_jax.Adapter) -> float:
        # Clean-query R@1 of the source model, computed once per direction.
        if direction not in self._clean_r1:
            encoder, _, _ = self.data.query_side(direction)
            self._clean_r1[direction] = study.clean_retrieval(
                encoder,
                adapter.params(adapter.constants.initial),
                self.queries(direction, "clean"),
                self.galleries[direction],
                self.relevant[direction],
            )["r1"]
        return self._clean_r1[direction]

    def queries(self, direction: str, spec: str) -> np.ndarray:
        key = (direction, spec)
        if key not in self.inputs:
            self.inputs[key] = self.data.query_inputs(direction, spec, self.cfg.seed)
        return self.inputs[key]

    def run(self, run: dict) -> tuple[dict, dict]:
        if run["method"] == "oracle":
            return self.run_oracle(run), {}
        direction, method = run["direction"], run["method"]
        adapter = self.adapter(direction, method)
        start = time.perf_counter()
        stream, inputs = self.stream(run)
        metrics, result = study.run_method(adapter, stream, self.relevant[direction])
        row = {
            **{k: run[k] for k in ("key", "run_key", "seed", "group", "direction", "method")},
            "shifts": run["shifts"],
            **metrics,
            "rolled_back": int(result.rolled_back.sum()),
        }
        encoder, _, _ = self.data.query_side(direction)
        clean = self.queries(direction, "clean")
        if run["kind"] != "single" or run["group"] == "qs":
            after = study.clean_retrieval(
                encoder,
                adapter.params(result.final_state),
                clean,
                self.galleries[direction],
                self.relevant[direction],
            )
            row["forgetting_r1"] = after["r1"] - self.clean_r1(direction, adapter)
        row["seconds"] = round(time.perf_counter() - start, 2)
        traces = {k: np.asarray(v) for k, v in result.metrics.items()}
        if run["group"] == "qs" and method in ("source", "rest"):
            q_after = study.embed(encoder, adapter.params(result.final_state), inputs[0])
            row["diagnostics_after"] = study.query_diagnostics(q_after, self.galleries[direction])
            q_source = study.embed(encoder, adapter.params(adapter.constants.initial), inputs[0])
            row["diagnostics_source"] = study.query_diagnostics(q_source, self.galleries[direction])
        return row, traces

    def stream(self, run: dict):
        """The planned stream of ``run`` (its seed sets the order) and its domains' inputs."""
        direction = run["direction"]
        domains = [study.Domain(s, "shift") for s in run["shifts"]]
        inputs = [self.queries(direction, s) for s in run["shifts"]]
        stream = study.make_stream(
            "+".join(run["shifts"]),
            domains,
            inputs,
            kind=run["kind"],
            batch_size=self.cfg.batch_size,
            order=self.cfg.order,
            seed=run["seed"],
            total=self.cfg.diverse_total,
        )
        return stream, inputs

    def run_oracle(self, run: dict) -> dict:
        """Supervised LayerNorm tuning on the stream's first half, scored on its second half."""
        direction = run["direction"]
        start = time.perf_counter()
        encoder, params, rules = self.data.query_side(direction)
        stream, inputs = self.stream(run)
        order = stream.plan.ids[stream.plan.mask]  # query ids in stream order
        metrics = oracle.oracle_retrieval(
            encoder,
            params,
            rules,
            inputs[0],
            order,
            self.galleries[direction],
            self.relevant[direction],
            oracle.resolve(self.oracle_config, self.data.temperature),
            study.embed,
        )
        return {
            **{k: run[k] for k in ("key", "run_key", "seed", "group", "direction", "method")},
            "shifts": run["shifts"],
            **metrics,
            "uses_labels": True,
            "seconds": round(time.perf_counter() - start, 2),
        }


def main(argv=None) -> pathlib.Path:
    argv, restart = run_dir.split_run_flags(argv)
    cfg = parse_args(argv)
    validate_study_config(cfg)
    path = pathlib.Path(cfg.output_dir) / cfg.name
    with run_dir.study_logging(), run_dir.RunDir(path, restart=restart) as directory:
        directory.check_config({"study": vars(cfg)})  # again with the methods once resolved
        return run_study(cfg, directory)


def run_study(cfg: StudyConfig, directory: run_dir.RunDir) -> pathlib.Path:
    """The study in a locked run directory (see :func:`main`)."""
    jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(cfg.cache_dir) / "xla"))
    out = pathlib.Path(cfg.output_dir) / cfg.name
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "traces").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    data = cfg.task_spec().load(cfg)
    resolved = {
        "study": {k: v for k, v in vars(cfg).items()},
        "methods": {
            m: adapt_config(cfg, m, **ABLATIONS.get(m, {})).to_dict()
            for m in cfg.method_list() + (list(ABLATIONS) if cfg.ablations else [])
        },
        "data": data.description,
        "versions": versions(),
        "device": str(jax.devices()[0]),
        "device_count": jax.device_count(),
        "seed": cfg.seed,
        "stream_seeds": cfg.stream_seed_list(),
        "task": cfg.task,
        "directions": cfg.direction_list(),
        "shifts": {d: cfg.shift_list(d) for d in cfg.direction_list()},
        "hyperparameters": cfg.resolved_hyperparameters(),
        "oracle": (
            dataclasses.asdict(oracle.resolve(oracle.OracleConfig(), data.temperature))
            if cfg.oracle
            else None
        ),
        "command": " ".join(sys.argv),
        "deterministic": "every figure, for this machine and these versions (CPU, fixed seeds "
        "and stream order); 'seconds' is a timing and varies",
    }
    directory.write_config(resolved)
    results = directory.results()
    runner = Runner(cfg, data)
    runs = plan_runs(cfg)
    todo = [r for r in runs if r["key"] not in results]
    log.info("%d runs planned, %d already done", len(runs), len(runs) - len(todo))
    for run in tqdm(todo, desc="study", mininterval=1.0):
        row, traces = runner.run(run)
        np.savez(
            out / "traces" / (run["key"].replace("|", "__").replace("@", "_") + ".npz"), **traces
        )
        results.add(row)
    rows = [results.rows[r["key"]] for r in runs]
    merged = aggregate.aggregate(rows)
    headline = aggregate.summary(rows)
    (out / "summary.json").write_text(json.dumps(headline, indent=2) + "\n")
    (out / "table.md").write_text(report.markdown(merged, data.description, headline))
    plots.make_all(merged, out)
    log.info("wrote %s in %.0f s", out, time.perf_counter() - t0)
    print((out / "table.md").read_text())
    return out


if __name__ == "__main__":
    main()
