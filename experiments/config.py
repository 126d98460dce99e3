"""The study's one configuration: a dataclass, its command-line flags, and method overrides.

Every field is a flag (``--methods source,tcr``, ``--image-shifts all``); ``--adapt KEY=VALUE``
overrides an :class:`rest_jax.AdaptConfig` field for every method and ``--adapt
METHOD.KEY=VALUE`` for one method. The resolved configuration is written next to the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from rest_jax.data.image_corruptions import IMAGE_CORRUPTIONS
from rest_jax.data.text_corruptions import TEXT_CORRUPTIONS

ALL_METHODS = "source,tent,eata,sar,read,shot,deyo,tcr,rest"
CHAR_LEVEL = ("keyboard", "ocr", "char_insert", "char_substitute", "char_swap", "char_delete")


@dataclasses.dataclass
class StudyConfig:
    """What a study runs. Defaults: the embedded SynthWorld study (see README)."""

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

    # The grid.
    methods: str = ALL_METHODS
    directions: str = "i2t,t2i"
    image_shifts: str = "gaussian_noise@5,zoom_blur@5,fog@5,jpeg_compression@5"
    text_shifts: str = "keyboard@5,synonym_replacement@0.3"
    t2i_captions_per_image: int = 1  # caption queries per image for t2i (0: all of them)
    severity_sweep: str = "gaussian_noise"
    severity_methods: str = "source,tcr,rest"
    diverse: str = "mixed,continual"
    diverse_methods: str = "source,tcr,rest"
    diverse_directions: str = "i2t"
    diverse_total: int = 1000  # queries in a diverse stream, shared equally by its domains
    ablations: bool = True
    batch_size: int = 64
    order: str = "seeded"  # stream order: "seeded" (one per seed), "reference" (TCR's)
    stream_seeds: str = "0,1,2"  # stream orders; every row is the mean ± std over them
    oracle: bool = True  # add the supervised LayerNorm-tuning ceiling (uses labels)
    max_queries: int = 0  # 0: every query of the split
    adapt: tuple[str, ...] = ()  # AdaptConfig overrides, "KEY=VALUE" or "METHOD.KEY=VALUE"

    def stream_seed_list(self) -> list[int]:
        return [int(s) for s in _split(self.stream_seeds)]

    def resolved_hyperparameters(self) -> str:
        """``auto``: the world's tuned values on SynthWorld, the published ones elsewhere."""
        if self.hyperparameters != "auto":
            return self.hyperparameters
        return "synthworld" if self.dataset == "synthworld" else "paper"

    def method_list(self) -> list[str]:
        return _split(self.methods)

    def direction_list(self) -> list[str]:
        return _split(self.directions)

    def shift_list(self, direction: str) -> list[str]:
        """The corruption@level specs of a direction, with ``all`` expanded."""
        spec = self.image_shifts if direction == "i2t" else self.text_shifts
        if spec == "all":
            return full_grid(direction)
        return _split(spec)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def full_grid(direction: str) -> list[str]:
    """Every corruption at every level: 16 x 5 image shifts, or the text types at their levels."""
    if direction == "i2t":
        return [f"{name}@{s}" for name in IMAGE_CORRUPTIONS for s in range(1, 6)]
    out = []
    for name in TEXT_CORRUPTIONS:
        levels = range(1, 8) if name in CHAR_LEVEL else (0.3, 0.35)
        out += [f"{name}@{level}" for level in levels]
    return out


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


def parse_args(argv=None, defaults: StudyConfig | None = None) -> StudyConfig:
    """Builds a StudyConfig from command-line flags, one per field."""
    defaults = defaults or StudyConfig()
    parser = argparse.ArgumentParser(description="rest_jax query-shift study")
    hints = typing.get_type_hints(StudyConfig)
    for field in dataclasses.fields(StudyConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if field.name == "adapt":
            parser.add_argument(flag, action="append", default=list(default), metavar="KEY=VALUE")
        elif hints[field.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    args = parser.parse_args(argv)
    values = vars(args)
    values["adapt"] = tuple(values["adapt"])
    return StudyConfig(**values)
