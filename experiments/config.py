"""The study's one configuration: a dataclass, its command-line flags, and method overrides.

Every field is a flag (``--methods source,tcr``, ``--shifts i2t=all``); ``--adapt KEY=VALUE``
overrides an :class:`rest_jax.AdaptConfig` field for every method and ``--adapt
METHOD.KEY=VALUE`` for one method. The resolved configuration is written next to the results.

A field's flag takes its help text and ``--help`` group from :data:`FLAG_HELP` (a field without
an entry fails tests/test_study_cli.py) and its type from the annotation. Values are checked
(:func:`check_config`) before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
import typing

from experiments.lists import comma_list
from experiments.tasks import TASKS, Task, get_task
from rest_jax.config import HYPERPARAMETER_SETS
from rest_jax.data.streams import ORDERS

ALL_METHODS = "source,tent,eata,sar,read,shot,deyo,tcr,rest"
AUTO = "auto"  # a grid field's value that means: the task's own default


@dataclasses.dataclass
class StudyConfig:
    """What a study runs. Defaults: the embedded SynthWorld study (see README)."""

    task: str = "image-text"
    name: str = "default"
    output_dir: str = "runs"
    cache_dir: str = ".cache/rest_jax"
    seed: int = 0

    # Data and model. "synthworld" uses the shipped source model (rest_jax/assets/world_source,
    # hash-checked); "coco" / "flickr" read the Karpathy test split from data_dir and a CLIP
    # checkpoint directory.
    dataset: str = "synthworld"
    data_dir: str = ""
    checkpoint: str = ""
    image_size: int = 0  # 0: the source model's (32 px), or the checkpoint's preprocessing size
    split: str = "test"  # "validation" to tune (SynthWorld only)
    source_model: str = ""  # SynthWorld: a source-model directory instead of the shipped one
    retrain_source: bool = False  # SynthWorld: retrain the source model (~N min) into cache_dir
    hyperparameters: str = "auto"  # "synthworld" (tuned on its validation split), "paper", auto
    combiner: str = "auto"  # composed task: auto (shipped / zero-shot), zero-shot, or a directory

    # The grid.
    methods: str = ALL_METHODS
    directions: str = AUTO  # the task's directions
    shifts: tuple[str, ...] = ()  # "DIRECTION=SPEC,SPEC" (or DIRECTION=all); else the task's
    t2i_captions_per_image: int = 1  # caption queries per image for t2i (0: all of them)
    severity_sweep: str = AUTO  # the task's swept shifts (image-text: gaussian_noise)
    severity_methods: str = "source,tcr,rest"
    diverse: str = "mixed,continual"
    diverse_methods: str = "source,tcr,rest"
    diverse_directions: str = AUTO  # the task's primary (first) direction
    diverse_total: int = 1000  # queries in a diverse stream, shared equally by its domains
    ablations: bool = True
    batch_size: int = 64
    order: str = "seeded"  # stream order: "seeded" (one per seed), "reference" (TCR's)
    stream_seeds: str = "0,1,2"  # stream orders; every row is the mean ± std over them
    oracle: bool = True  # add the supervised LayerNorm-tuning ceiling (uses labels)
    reference_cosine: bool = True  # log tent's cos(g, r) for the reference-cosine plot
    max_queries: int = 0  # 0: every query of the split
    adapt: tuple[str, ...] = ()  # AdaptConfig overrides, "KEY=VALUE" or "METHOD.KEY=VALUE"

    def stream_seed_list(self) -> list[int]:
        return [int(s) for s in comma_list(self.stream_seeds)]

    def resolved_hyperparameters(self) -> str:
        """``auto``: the world's tuned values on SynthWorld, the published ones elsewhere."""
        if self.hyperparameters != "auto":
            return self.hyperparameters
        return "synthworld" if self.dataset == "synthworld" else "paper"

    def method_list(self) -> list[str]:
        return comma_list(self.methods)

    def task_spec(self) -> Task:
        return get_task(self.task)

    def primary_direction(self) -> str:
        """The task's first direction: the severity sweep and REST's ablations run there."""
        return self.task_spec().directions[0]

    def direction_list(self) -> list[str]:
        if self.directions == AUTO:
            return list(self.task_spec().directions)
        return comma_list(self.directions)

    def diverse_direction_list(self) -> list[str]:
        if self.diverse_directions == AUTO:
            return [self.primary_direction()]
        return comma_list(self.diverse_directions)

    def severity_sweep_list(self) -> list[str]:
        if self.severity_sweep == AUTO:
            return comma_list(self.task_spec().severity_sweep)
        return comma_list(self.severity_sweep)

    def shift_overrides(self) -> dict[str, str]:
        """``--shifts`` as ``{direction: "spec,spec"}`` (a later entry of a direction wins).

        Raises:
          ValueError: an entry is not ``DIRECTION=SPECS``.
        """
        out: dict[str, str] = {}
        for item in self.shifts:
            direction, sep, specs = item.partition("=")
            direction = direction.strip()
            if not sep or not direction or not specs.strip():
                raise ValueError(f"--shifts expects DIRECTION=SPEC,SPEC, got {item!r}")
            out[direction] = specs.strip()
        return out

    def shift_list(self, direction: str) -> list[str]:
        """The shift specs of a direction (``--shifts`` or the task's defaults), ``all``
        expanded to the task's full grid."""
        task = self.task_spec()
        spec = self.shift_overrides().get(direction, task.default_shifts[direction])
        if spec == "all":
            return task.full_grid(direction)
        return comma_list(spec)


PROG = "python -m experiments.main"
DATA, GRID, ADAPT, OUTPUT = "data and model", "grid", "adaptation overrides", "output"

# The --help groups in order: title -> description with an example.
GROUPS: dict[str, str] = {
    DATA: "What the queries and the gallery come from, and the source model.\n"
    "  e.g. --dataset coco --data-dir DIR --checkpoint CLIP_DIR",
    GRID: "Which runs the study makes: methods x directions x query shifts, the severity\n"
    "sweep, the diverse-shift streams, REST's ablations, and how the queries stream.\n"
    "  e.g. --methods source,tcr,rest --shifts i2t=all --shifts t2i=all",
    ADAPT: "AdaptConfig fields (rest_jax/config.py) changed from each method's preset.\n"
    "  e.g. --adapt learning_rate=1e-3 --adapt rest.num_candidates=8",
    OUTPUT: "Where results and caches go.\n  e.g. --name full --output-dir runs",
}

# Every StudyConfig field: (group, help). A field added to StudyConfig needs an entry here.
FLAG_HELP: dict[str, tuple[str, str]] = {
    "name": (OUTPUT, "run name: results go to OUTPUT_DIR/NAME; a run of an existing name resumes"),
    "output_dir": (OUTPUT, "directory of the runs"),
    "cache_dir": (OUTPUT, "cache of the source model, the TFDS builds and XLA's compilations"),
    "seed": (DATA, "seed of the corruptions' random draws and of the methods' own randomness"),
    "task": (
        DATA,
        "the retrieval task: " + ", ".join(TASKS) + " (each with its own data, model, "
        "directions and shifts)",
    ),
    "dataset": (
        DATA,
        "synthworld (generated; the shipped source model), coco or flickr (the Karpathy "
        "test split from --data-dir with the CLIP of --checkpoint); the composed task reads "
        "synthworld, fashioniq or cirr (their val split); the video-audio task synthworld (its "
        "audio-visual world) or ks50 / vggsound (READ's test clips from --data-dir)",
    ),
    "data_dir": (
        DATA,
        "coco/flickr: the directory of the Karpathy split's JSON and images; fashioniq/cirr "
        "(--task composed): the dataset's captions/, image_splits/ and images; ks50/vggsound "
        "(--task video-audio): the frame folders, wavs and test list (experiments/av_data.py)",
    ),
    "checkpoint": (
        DATA,
        "coco/flickr/fashioniq/cirr: a Hugging Face CLIP directory; ks50/vggsound: an "
        "audio-visual model directory (the layout of python -m experiments.train_av_source)",
    ),
    "combiner": (
        DATA,
        "composed task: how the reference image's and the modification's features compose: "
        "auto (the shipped combiner on SynthWorld, zero-shot on fashioniq/cirr), zero-shot "
        "(normalised sum), or a combiner directory (python -m experiments.train_combiner)",
    ),
    "image_size": (DATA, "image side in pixels; 0: the world's 32 px, or the checkpoint's size"),
    "split": (DATA, "split evaluated: test, or validation to tune (SynthWorld only)"),
    "source_model": (
        DATA,
        "SynthWorld: a source-model directory (python -m experiments.train_source, or "
        "train_av_source for --task video-audio) instead of the shipped, hash-checked one",
    ),
    "retrain_source": (
        DATA,
        "SynthWorld: retrain the source model with the shipped recipe (~25 min on 2 CPUs) into "
        "--cache-dir and use it; never done without this flag",
    ),
    "hyperparameters": (
        ADAPT,
        "each method's learning rate and steps: synthworld (tuned on its validation split, "
        "docs/tuning.md), paper (published values), or auto (synthworld on SynthWorld, paper "
        "otherwise)",
    ),
    "max_queries": (DATA, "keep the first N images of the split and their captions; 0: all"),
    "methods": (GRID, f"methods run on every shift, comma-separated, of {ALL_METHODS}"),
    "directions": (
        GRID,
        "query directions, comma-separated (image-text: i2t = image queries against the "
        "captions, t2i); auto: all of the task's",
    ),
    "shifts": (
        GRID,
        "DIRECTION=SPEC,SPEC: the query shifts of a direction, e.g. i2t=fog@3,gaussian_noise@5 "
        "(image corruptions at severity 1-5) or t2i=keyboard@5 (text corruptions), or "
        "DIRECTION=all (the task's full grid); a direction not given keeps the task's defaults",
    ),
    "t2i_captions_per_image": (GRID, "caption queries per image for t2i (0: all of them)"),
    "severity_sweep": (
        GRID,
        "shifts also run at levels 1-5 on the task's first direction; auto: the task's "
        "(image-text: gaussian_noise); '': none",
    ),
    "severity_methods": (GRID, "methods of the severity sweep"),
    "diverse": (GRID, "diverse-shift streams over the shifts: mixed and/or continual; '': none"),
    "diverse_methods": (GRID, "methods of the diverse-shift streams"),
    "diverse_directions": (
        GRID,
        "directions of the diverse-shift streams; auto: the task's first direction",
    ),
    "diverse_total": (GRID, "queries in a diverse stream, shared equally by its domains"),
    "ablations": (GRID, "REST's ablations on the shifts of the task's first direction"),
    "batch_size": (GRID, "queries per stream batch"),
    "order": (
        GRID,
        "stream order of each domain's queries: seeded (one order per --stream-seeds entry) or "
        "reference (torch.randperm, seed 0, the same for every seed)",
    ),
    "stream_seeds": (GRID, "stream orders, comma-separated; every row is mean ± std over them"),
    "oracle": (
        GRID,
        "the oracle row: supervised LayerNorm tuning with labels on each stream's first half, "
        "R@1 on its second half (a ceiling, not a method)",
    ),
    "reference_cosine": (
        GRID,
        "log cos(g, r) between tent's gradient and the clean reference gradient r (the "
        "reference-cosine plot); it costs computing r for tent",
    ),
    "adapt": (
        ADAPT,
        "KEY=VALUE for every method or METHOD.KEY=VALUE for one (VALUE a Python literal); "
        "repeat it for several",
    ),
}

EPILOG = f"""examples:
  {PROG}                                  the default study (SynthWorld)
  {PROG} --name full --shifts i2t=all --shifts t2i=all
  {PROG} --methods source,rest --directions i2t --severity-sweep '' --diverse ''
  {PROG} --dataset coco --data-dir DIR --checkpoint CLIP_DIR

Results: OUTPUT_DIR/NAME/ (config.json, results.jsonl, table.md, plots/). See the README."""

DATASETS = ("synthworld", "coco", "flickr", "fashioniq", "cirr", "ks50", "vggsound")
SPLITS = ("test", "validation")
CHOICES = {
    "task": tuple(TASKS),
    "dataset": DATASETS,
    "split": SPLITS,
    "order": ORDERS,
    "hyperparameters": ("auto", *HYPERPARAMETER_SETS),
}
DIVERSE_KINDS = ("mixed", "continual")


def adapt_overrides(config: StudyConfig, method: str) -> dict[str, typing.Any]:
    """The AdaptConfig overrides that apply to ``method`` (values parsed as Python literals)."""
    import ast

    out = {}
    for item in config.adapt:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--adapt expects KEY=VALUE or METHOD.KEY=VALUE, got {item!r}")
        target, dot, field = key.partition(".")
        if dot and target != method:
            continue
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out[field if dot else key] = parsed
    return out


def check_config(config: StudyConfig) -> None:
    """Checks the values a study would only trip over later (after loading data).

    The flags' own checks (choices, counts, methods, shifts, ``--adapt``) are those of
    :func:`experiments.validate.study_config_problems`; the fields of the stream orders and
    the source model are checked here.

    Raises:
      ValueError: naming each bad flag and what it accepts.
    """
    from experiments.validate import validate_study_config  # validate imports this module

    if config.hyperparameters not in CHOICES["hyperparameters"]:
        raise ValueError(
            f"--hyperparameters must be one of {CHOICES['hyperparameters']}, "
            f"got {config.hyperparameters!r}"
        )
    try:
        seeds = config.stream_seed_list()
    except ValueError as error:
        raise ValueError(f"--stream-seeds must be comma-separated integers: {error}") from error
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--stream-seeds needs distinct integers, got {config.stream_seeds!r}")
    if config.retrain_source and config.source_model:
        raise ValueError("--retrain-source and --source-model exclude each other")
    validate_study_config(config)


def _flag(name: str) -> str:
    return name.replace("_", "-")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks; wraps help text at spaces only (not in --flags)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _shown(value: typing.Any) -> str:
    """A default as --help shows it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value in ("", ()):
        return "''" if value == "" else "none"
    return str(value)


def build_parser(defaults: StudyConfig | None = None) -> argparse.ArgumentParser:
    """The study's parser: one flag per StudyConfig field, in the groups of :data:`GROUPS`.

    Flag types follow the annotations: ``bool`` gives ``--x/--no-x``, ``tuple[T, ...]`` a
    repeatable flag, ``int``/``float``/``str`` a typed value (argparse rejects a bad one).
    """
    defaults = defaults or StudyConfig()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The query-shift study: source model, clean retrieval, query shift, and\n"
        "what each adaptation method wins back.",
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    groups = {title: parser.add_argument_group(title, text) for title, text in GROUPS.items()}
    hints = typing.get_type_hints(StudyConfig)
    for field in dataclasses.fields(StudyConfig):
        group, text = FLAG_HELP.get(
            field.name, ("other", "(no description: add it to FLAG_HELP in experiments/config.py)")
        )
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        default = getattr(defaults, field.name)
        kwargs = dict(
            default=default, help=f"{text} (default: {_shown(default)})".replace("%", "%%")
        )
        hint = hints[field.name]
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            # Repeatable; given at all, it replaces the default instead of extending it.
            kwargs.update(action="append", type=typing.get_args(hint)[0], default=None)
            kwargs["metavar"] = {"adapt": "KEY=VALUE", "shifts": "DIRECTION=SPECS"}.get(field.name)
        elif hint in (int, float, str):
            kwargs["type"] = hint
            if field.name in CHOICES:
                kwargs["choices"] = CHOICES[field.name]
            elif hint is not str:
                kwargs["metavar"] = "N" if hint is int else "X"
        else:
            raise TypeError(f"StudyConfig.{field.name}: no flag for the type {hint}")
        groups[group].add_argument("--" + _flag(field.name), **kwargs)
    return parser


def parse_args(argv=None, defaults: StudyConfig | None = None) -> StudyConfig:
    """Builds a StudyConfig from command-line flags, one per field; bad values exit with a
    usage error (status 2) before any work starts."""
    defaults = defaults or StudyConfig()
    parser = build_parser(defaults)
    values = vars(parser.parse_args(argv))
    hints = typing.get_type_hints(StudyConfig)
    for name, value in values.items():
        if typing.get_origin(hints[name]) is tuple:
            values[name] = getattr(defaults, name) if value is None else tuple(value)
    config = StudyConfig(**values)
    try:
        check_config(config)
    except ValueError as error:
        parser.error(str(error))
    return config
