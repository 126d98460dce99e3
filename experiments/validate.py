"""Checks a study's flags before anything is prepared, one clear line per problem.

Without it a typo (``--methods tnet``, ``--image-shifts fgo@5``, ``gaussian_noise@2.5``,
``--directions it2``) surfaces only after the source model is trained or the dataset is
prepared, as a traceback from deep inside the run.
"""

from __future__ import annotations

import pathlib

from experiments.config import DATASETS, DIVERSE_KINDS, SPLITS, StudyConfig, adapt_overrides
from rest_jax.config import PRESETS, AdaptConfig
from rest_jax.data.image_corruptions import IMAGE_CORRUPTIONS, SEVERITIES
from rest_jax.data.streams import ORDERS
from rest_jax.data.text_corruptions import CHAR_CORRUPTIONS, CHAR_LEVELS, TEXT_CORRUPTIONS
from rest_jax.study import DIRECTIONS


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _known_methods() -> list[str]:
    from experiments.main import ABLATIONS  # main imports this module; no cycle at call time

    return sorted(PRESETS) + list(ABLATIONS)


def _method_problems(flag: str, text: str) -> list[str]:
    known = _known_methods()
    return [
        f"{flag}: unknown method {name!r}; known: {', '.join(known)}"
        for name in _split(text)
        if name not in known
    ]


def _choice_problems(flag: str, text: str, choices: tuple[str, ...], what: str) -> list[str]:
    return [
        f"{flag}: unknown {what} {name!r}; expected one of {', '.join(choices)}"
        for name in _split(text)
        if name not in choices
    ]


def _unknown(what: str, name: str, known, hint: str = "") -> str:
    return f"unknown {what} {name!r}{hint}; known: {', '.join(known)}"


def image_shift_problem(spec: str) -> str | None:
    """Why ``spec`` is not an image shift ``name@severity`` (None when it is one)."""
    name, at, level = spec.partition("@")
    if name not in IMAGE_CORRUPTIONS:
        hint = " (a text corruption: it goes in --text-shifts)" if name in TEXT_CORRUPTIONS else ""
        return f"{spec}: {_unknown('image corruption', name, IMAGE_CORRUPTIONS, hint)}"
    if not at or not level.isdigit() or int(level) not in SEVERITIES:
        return f"{spec}: the severity of an image corruption is an integer 1-5 ({name}@3)"
    return None


def text_shift_problem(spec: str) -> str | None:
    """Why ``spec`` is not a text shift ``name@level`` / ``name@rate`` (None when it is one)."""
    name, at, level = spec.partition("@")
    if name not in TEXT_CORRUPTIONS:
        hint = (
            " (an image corruption: it goes in --image-shifts)" if name in IMAGE_CORRUPTIONS else ""
        )
        return f"{spec}: {_unknown('text corruption', name, TEXT_CORRUPTIONS, hint)}"
    if name in CHAR_CORRUPTIONS:
        if not at or not level.isdigit() or int(level) not in CHAR_LEVELS:
            return f"{spec}: the level of a character corruption is an integer 1-7 ({name}@5)"
        return None
    try:
        rate = float(level) if "." in level else None
    except ValueError:
        rate = None
    if rate is None or not 0.0 < rate <= 1.0:
        return (
            f"{spec}: the level of a word corruption is a rate in (0, 1] written with a "
            f"decimal point ({name}@0.3)"
        )
    return None


def _shift_problems(flag: str, text: str, direction: str) -> list[str]:
    if text == "all":
        return []
    check = image_shift_problem if direction == "i2t" else text_shift_problem
    return [f"{flag}: {problem}" for spec in _split(text) if (problem := check(spec))]


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
    methods = {*_split(cfg.methods), *_split(cfg.severity_methods), *_split(cfg.diverse_methods)}
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


def _data_problems(cfg: StudyConfig) -> list[str]:
    if cfg.dataset not in DATASETS:
        return [
            f"--dataset: unknown dataset {cfg.dataset!r}; expected one of {', '.join(DATASETS)}"
        ]
    problems = []
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
        problems.append(f"--checkpoint: --dataset {cfg.dataset} needs a CLIP checkpoint directory")
    return problems


def study_config_problems(cfg: StudyConfig) -> list[str]:
    """Every problem of a study's flags, one line each (empty when there is none)."""
    problems = _data_problems(cfg)
    problems += _choice_problems("--directions", cfg.directions, DIRECTIONS, "direction")
    problems += _choice_problems(
        "--diverse-directions", cfg.diverse_directions, DIRECTIONS, "direction"
    )
    for flag, text in (
        ("--methods", cfg.methods),
        ("--severity-methods", cfg.severity_methods),
        ("--diverse-methods", cfg.diverse_methods),
    ):
        problems += _method_problems(flag, text)
    problems += _shift_problems("--image-shifts", cfg.image_shifts, "i2t")
    problems += _shift_problems("--text-shifts", cfg.text_shifts, "t2i")
    problems += [
        f"--severity-sweep: {_unknown('image corruption', name, IMAGE_CORRUPTIONS)}"
        for name in _split(cfg.severity_sweep)
        if name not in IMAGE_CORRUPTIONS
    ]
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

    Checked: dataset, split and (real data) data directory and checkpoint; directions;
    methods (``--methods``, ``--severity-methods``, ``--diverse-methods``: presets or REST's
    ablations); image shifts (a known corruption at an integer severity 1-5, or ``all``);
    text shifts (a known corruption at an integer level 1-7, or a rate in (0, 1] for word
    corruptions); the severity sweep's corruptions; diverse stream kinds; the stream order;
    counts that must be positive; ``--adapt`` keys, methods and the configurations they give.
    """
    problems = study_config_problems(cfg)
    if problems:
        lines = "\n".join(f"  {problem}" for problem in problems)
        raise ValueError(f"invalid study flags ({len(problems)}):\n{lines}")
