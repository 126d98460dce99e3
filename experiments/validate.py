"""Checks a study's flags before anything is prepared, one clear line per problem.

Without it a typo (``--methods tnet``, ``--shifts i2t=fgo@5``, ``gaussian_noise@2.5``,
``--directions it2``) surfaces only after the source model is trained or the dataset is
prepared, as a traceback from deep inside the run.
"""

from __future__ import annotations

import pathlib

from experiments.ablations import ABLATIONS
from experiments.config import AUTO, DATASETS, DIVERSE_KINDS, SPLITS, StudyConfig, adapt_overrides
from experiments.lists import comma_list
from experiments.tasks import TASKS, Task
from experiments.tasks.base import check_spec_characters
from rest_jax.config import PRESETS, AdaptConfig
from rest_jax.data.streams import ORDERS


def _known_methods() -> list[str]:
    return sorted(PRESETS) + list(ABLATIONS)


def _method_problems(flag: str, text: str) -> list[str]:
    known = _known_methods()
    return [
        f"{flag}: unknown method {name!r}; known: {', '.join(known)}"
        for name in comma_list(text)
        if name not in known
    ]


def _choice_problems(flag: str, text: str, choices: tuple[str, ...], what: str) -> list[str]:
    return [
        f"{flag}: unknown {what} {name!r}; expected one of {', '.join(choices)}"
        for name in comma_list(text)
        if name not in choices
    ]


def _shift_problems(cfg: StudyConfig, task: Task, directions: list[str]) -> list[str]:
    try:
        overrides = cfg.shift_overrides()
    except ValueError as error:
        return [str(error)]
    problems = [
        f"--shifts {d}: unknown direction {d!r} of task {task.name}; expected one of "
        f"{', '.join(task.directions)}"
        for d in overrides
        if d not in task.directions
    ]
    given = [d for d in overrides if d in task.directions and d not in directions]
    for direction in [*directions, *given]:
        if overrides.get(direction) == "all":
            continue
        for spec in comma_list(overrides.get(direction, task.default_shifts[direction])):
            try:
                check_spec_characters(spec)
                task.check_shift(spec, direction)
            except ValueError as error:
                problems.append(f"--shifts {direction}: {error}")
    return problems


def _severity_problems(cfg: StudyConfig, task: Task) -> list[str]:
    problems = []
    for name in cfg.severity_sweep_list():
        try:
            task.check_shift(f"{name}@1", task.directions[0])
        except ValueError as error:
            problems.append(f"--severity-sweep: {name}: {error}")
    return problems


def _adapt_problems(cfg: StudyConfig) -> list[str]:
    problems = []
    fields = set(AdaptConfig.__dataclass_fields__)
    known = _known_methods()
    for item in cfg.adapt:
        key, sep, _ = item.partition("=")
        target, dot, field = key.partition(".")
        if not sep:
            problems.append(f"--adapt {item}: expected KEY=VALUE or METHOD.KEY=VALUE")
        elif dot and target not in known:
            problems.append(f"--adapt {item}: unknown method {target!r}; known: {', '.join(known)}")
        elif (field if dot else key) not in fields:
            problems.append(
                f"--adapt {item}: {(field if dot else key)!r} is not an AdaptConfig field"
            )
    if problems:
        return problems
    methods = {
        *comma_list(cfg.methods),
        *comma_list(cfg.severity_methods),
        *comma_list(cfg.diverse_methods),
    }
    invalid: dict[str, list[str]] = {}  # error -> the methods it concerns
    for method in sorted(methods):
        if method not in known:
            continue
        base = PRESETS[method.split("-")[0]]
        try:
            AdaptConfig().replace(**{**base, **adapt_overrides(cfg, method)})
        except (TypeError, ValueError) as err:
            invalid.setdefault(str(err), []).append(method)
    for error, names in invalid.items():
        problems.append(f"--adapt: an invalid configuration of {', '.join(names)}: {error}")
    return problems


def _number_problems(cfg: StudyConfig) -> list[str]:
    bounds = {
        "batch_size": 1,
        "max_queries": 0,
        "diverse_total": 1,
        "t2i_captions_per_image": 0,
        "image_size": 0,
    }
    return [
        f"--{name.replace('_', '-')}: must be >= {low}, got {getattr(cfg, name)}"
        for name, low in bounds.items()
        if getattr(cfg, name) < low
    ]


def _data_problems(cfg: StudyConfig, task: Task) -> list[str]:
    if cfg.dataset not in DATASETS:
        return [
            f"--dataset: unknown dataset {cfg.dataset!r}; expected one of {', '.join(DATASETS)}"
        ]
    if cfg.dataset not in task.datasets:
        return [
            f"--dataset {cfg.dataset}: not a dataset of task {task.name}; expected one of "
            f"{', '.join(task.datasets)}"
        ]
    problems = []
    if cfg.combiner != "auto" and task.name != "composed":
        problems.append(f"--combiner: only the composed task composes queries (--task {task.name})")
    if cfg.split not in SPLITS:
        problems.append(
            f"--split: unknown split {cfg.split!r}; expected one of {', '.join(SPLITS)}"
        )
    if cfg.dataset == "synthworld":
        return problems
    if cfg.split != "test":
        problems.append(
            f"--split {cfg.split}: only SynthWorld has a tuning split; {cfg.dataset} runs on test"
        )
    if not cfg.data_dir:
        problems.append(
            f"--data-dir: --dataset {cfg.dataset} needs the directory of its split file and images"
        )
    elif not pathlib.Path(cfg.data_dir).is_dir():
        problems.append(f"--data-dir: {cfg.data_dir} does not exist or is not a directory")
    if not cfg.checkpoint:
        model = "an audio-visual model" if task.name == "video-audio" else "a CLIP checkpoint"
        problems.append(f"--checkpoint: --dataset {cfg.dataset} needs {model} directory")
    return problems


def study_config_problems(cfg: StudyConfig) -> list[str]:
    """Every problem of a study's flags, one line each (empty when there is none)."""
    if cfg.task not in TASKS:
        return [f"--task: unknown task {cfg.task!r}; expected one of {', '.join(TASKS)}"]
    task = cfg.task_spec()
    problems = _data_problems(cfg, task)
    for flag, text in (
        ("--directions", cfg.directions),
        ("--diverse-directions", cfg.diverse_directions),
    ):
        if text != AUTO:
            problems += _choice_problems(flag, text, task.directions, "direction")
    for flag, text in (
        ("--methods", cfg.methods),
        ("--severity-methods", cfg.severity_methods),
        ("--diverse-methods", cfg.diverse_methods),
    ):
        problems += _method_problems(flag, text)
    directions = [d for d in cfg.direction_list() if d in task.directions]
    problems += _shift_problems(cfg, task, directions)
    problems += _severity_problems(cfg, task)
    problems += _choice_problems("--diverse", cfg.diverse, DIVERSE_KINDS, "diverse stream")
    if cfg.order not in ORDERS:
        problems.append(
            f"--order: unknown order {cfg.order!r}; expected one of {', '.join(ORDERS)}"
        )
    problems += _number_problems(cfg)
    problems += _adapt_problems(cfg)
    return problems


def validate_study_config(cfg: StudyConfig) -> None:
    """Raises a ValueError listing every problem of the study's flags, one per line.

    Checked: the task; dataset, split and (real data) data directory and checkpoint;
    directions (the task's); methods (``--methods``, ``--severity-methods``,
    ``--diverse-methods``: presets or REST's ablations); ``--shifts`` (the task's directions,
    each spec checked by the task: image-text takes a known image corruption at an integer
    severity 1-5 for i2t, a text corruption at an integer level 1-7 or a rate in (0, 1] for
    t2i, or ``all``); the severity sweep's shifts; diverse stream kinds; the stream order;
    counts that must be positive; ``--adapt`` keys, methods and the configurations they give.
    """
    problems = study_config_problems(cfg)
    if problems:
        lines = "\n".join(f"  {problem}" for problem in problems)
        raise ValueError(f"invalid study flags ({len(problems)}):\n{lines}")
