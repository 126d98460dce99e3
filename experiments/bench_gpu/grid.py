"""The benchmark grid: its constants, rows and their inputs (shapes, seeds, variants)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from experiments.ablations import ABLATIONS

MIB = 2**20
JAX_PRECISIONS = ("fp32", "tf32", "bf16")
TORCH_PRECISIONS = ("fp32", "tf32", "bf16")
# Every random input is fixed by a seed (jax.random keys, torch generators, numpy for token
# ids): tower weights, gallery, and timed batch i from ``batches + i``. Recorded in bench.json.
SEEDS = {"params": 0, "gallery": 1, "batches": 100}
# Methods and ablation variants: name -> (preset, overrides).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "source": ("source", {}),
    "tent": ("tent", {}),
    "tcr": ("tcr", {}),
    "rest": ("rest", {}),
    **{name: ("rest", overrides) for name, overrides in ABLATIONS.items()},
}
PRESET_DEFAULTS = {
    "vit-b16": dict(
        batch_sizes="64,256",
        galleries="25000,1000000",
        precisions="bf16,fp32,tf32",
        tf32_methods="tcr",
        source_pairs=32,
    ),
    # CPU-sized: fp32 only (tf32 does not exist on CPU), a 100k gallery in place of 1M.
    "small": dict(
        batch_sizes="64,256",
        galleries="25000,100000",
        precisions="fp32",
        tf32_methods="",
        source_pairs=16,
    ),
}
PRESET_DEFAULTS["world"] = PRESET_DEFAULTS["small"]  # CPU-sized too
PRESET_DEFAULTS["tiny"] = PRESET_DEFAULTS["small"]  # the harness's own smoke tests


@dataclasses.dataclass(frozen=True)
class Row:
    """One measurement: who runs what on which shapes."""

    framework: str  # "jax" or "torch"
    modality: str  # query modality: "image" or "text"
    batch_size: int
    gallery_size: int
    method: str
    precision: str

    @property
    def group(self) -> tuple:
        return (self.framework, self.modality, self.batch_size, self.gallery_size)


def plan(args) -> list[Row]:
    """The rows of one framework in priority order: gallery size, then modality, then batch
    size; inside, rest_jax rows are precision-major with the methods in the order given."""
    rows = []
    for n in args.galleries:
        for modality in args.modalities:
            for b in args.batch_sizes:
                if args.framework == "torch":
                    rows += [Row("torch", modality, b, n, "tcr", p) for p in args.torch_precisions]
                    continue
                for precision in args.precisions:
                    rows += [
                        Row("jax", modality, b, n, m, precision)
                        for m in args.methods
                        if precision != "tf32" or m in args.tf32_methods
                    ]
    return rows


def clip_config(preset: str):
    """The model shapes of a preset."""
    from experiments.training import SourceModelConfig, world_clip_config
    from rest_jax.models import vit_b16

    if preset == "vit-b16":
        return vit_b16()
    if preset == "small":  # the SynthWorld source model's shapes, 16 text tokens
        towers = SourceModelConfig(width=64, layers=2, heads=4, patch_size=8, max_text_len=16)
        return world_clip_config(towers, image_size=32, vocab_size=1000, sot_id=998, eot_id=999)
    if preset == "tiny":  # one layer of width 32: checks the harness, measures nothing useful
        towers = SourceModelConfig(width=32, layers=1, heads=2, patch_size=8, max_text_len=8)
        return world_clip_config(towers, image_size=16, vocab_size=100, sot_id=98, eot_id=99)
    if preset == "world":  # the embedded default's shipped source model (its config.json)
        from rest_jax.models.hf import read_config
        from rest_jax.pretrained import WORLD_SOURCE_DIR

        return read_config(WORLD_SOURCE_DIR)
    raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESET_DEFAULTS)}")


def random_token_ids(cfg, batch_size: int, seed: int) -> np.ndarray:
    """(B, L) int32 ids: BOS, random tokens, an EOS at a random position in the second half.

    The random tokens are neither BOS nor EOS (the pooled position is the first EOS).
    """
    rng = np.random.default_rng(seed)
    length = cfg.text.max_position_embeddings
    vocab, special = cfg.text.vocab_size, (cfg.text.bos_token_id, cfg.text.eos_token_id)
    if sorted(special) == [vocab - 2, vocab - 1]:  # CLIP's layout: the ids drawn so far
        ids = rng.integers(1, vocab - 2, size=(batch_size, length))
    else:
        ids = rng.choice(np.setdiff1d(np.arange(1, vocab), special), size=(batch_size, length))
    ids[:, 0] = cfg.text.bos_token_id
    ids[np.arange(batch_size), rng.integers(length // 2, length, size=batch_size)] = (
        cfg.text.eos_token_id
    )
    return ids.astype(np.int32)


TOWER_OPTIONS = ("attention", "residual")
ROW_OPTIONS = (*TOWER_OPTIONS, "mesh")


def row_options(row: Row, args) -> dict[str, Any]:
    """The options a row runs with: ``--attention`` and ``--residual`` for bf16 rest_jax
    rows, ``--mesh`` (recorded as the mesh's device count) for every rest_jax row."""
    if row.framework != "jax":
        return {}
    options = {}
    if row.precision == "bf16":
        options = {k: getattr(args, k) for k in TOWER_OPTIONS if getattr(args, k) is not None}
    if args.mesh:
        import jax

        options["mesh"] = jax.device_count()
    return options
