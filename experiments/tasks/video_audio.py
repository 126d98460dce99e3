"""Video-audio retrieval: corrupted video clips against clean soundtracks (v2a) and corrupted
soundtracks against clean clips (a2v); clip ``i``'s video and audio are the one relevant pair.

The embedded default (``--dataset synthworld``) is the audio-visual world
(``rest_jax.data.avworld``) with its shipped two-tower source model
(``rest_jax/assets/av_source``, retrained by ``python -m experiments.train_av_source``);
``--source-model DIR`` takes another one. ``--dataset ks50|vggsound`` reads READ's
Kinetics-50 / VGGSound test clips from ``--data-dir`` (``experiments/av_data.py``) and embeds
them with the audio-visual model directory of ``--checkpoint`` (same layout as the shipped one).
Shifts (``experiments/tasks/video_audio_shifts.py``): a video corruption per frame
(``gaussian_noise@3``, ``frame_drop@4``) for v2a, an audio noise at an SNR (``rain@3``) for a2v;
on real data too they are applied by our own corruption code to the clean clips.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np

from experiments import study
from experiments.tasks.base import Task, TaskData
from experiments.tasks.video_audio_shifts import (
    DIRECTIONS,
    check_shift,
    full_grid,
    shift_queries,
)
from rest_jax import pretrained
from rest_jax.data.avworld import AVWorldConfig, generate_av_split
from rest_jax.data.relevance import composed_relevance
from rest_jax.models.audio_visual import (
    AUDIO_ADAPT_RULES,
    VIDEO_ADAPT_RULES,
    AVConfig,
    audio_encoder,
    audio_inputs,
    video_encoder,
    video_inputs,
)
from rest_jax.models.clip import contrastive_temperature

log = logging.getLogger("rest_jax.study")

NUM_SOURCE_PAIRS = 64
REAL_DATASETS = ("ks50", "vggsound")
# Calibrated on the world's validation split (docs/calibration_video_audio.md): each costs the
# source model 30-80% of its clean R@1 (76.6 both ways). v2a: one per family that reaches it
# (noise, weather, digital, temporal; no blur costs 30% at 32 px); a2v: every noise of READ.
DEFAULT_SHIFTS = {
    "v2a": "gaussian_noise@3,fog@1,jpeg_compression@5,freeze@3",
    "a2v": "gaussian_noise@4,traffic@5,crowd@3,rain@4,thunder@5,wind@3",
}


@dataclasses.dataclass(frozen=True)
class Clips:
    """Paired clips: uint8 videos ``(N, T, H, W, 3)`` and float32 waveforms ``(N, S)``."""

    videos: np.ndarray
    waveforms: np.ndarray
    sample_rate: int


def _source_model(cfg) -> pretrained.AVSource:
    """The shipped source model (hash-checked), ``--source-model`` or ``--checkpoint``."""
    directory = cfg.checkpoint if cfg.dataset in REAL_DATASETS else cfg.source_model
    return pretrained.load_av_source(directory or None)


def _world_clips(cfg, source: pretrained.AVSource):
    world = AVWorldConfig.from_dict(source.training["world"])
    split = "val" if cfg.split == "validation" else "test"
    clips = generate_av_split(world, split, 0, cfg.max_queries or None)
    # Source pairs: a fresh draw of the train split (seed 1), never the evaluated clips.
    pairs = generate_av_split(world, "train", 1, NUM_SOURCE_PAIRS)
    description = {
        "dataset": "synthworld",
        "world": "AVWorld",
        "split": cfg.split,
        "world_config": world.to_dict(),
        "ceiling_r1": clips.ceiling,
    }
    as_clips = [Clips(s.videos, s.waveforms, s.sample_rate) for s in (clips, pairs)]
    return *as_clips, description


def _real_clips(cfg, config: AVConfig):
    from experiments.av_data import read_av_clips

    audio = config.audio
    read = read_av_clips(
        cfg.data_dir,
        cfg.dataset,
        frames=config.video.frames,
        image_size=config.video.image_size,
        sample_rate=audio.sample_rate,
        seconds=audio.num_samples / audio.sample_rate,
        max_clips=cfg.max_queries or None,
    )
    clips = Clips(read.videos, read.waveforms, audio.sample_rate)
    # Real data has no train split here: the source pairs are the first clean test clips.
    pairs = Clips(
        clips.videos[:NUM_SOURCE_PAIRS], clips.waveforms[:NUM_SOURCE_PAIRS], clips.sample_rate
    )
    description = {
        "dataset": cfg.dataset,
        "split": "test",
        "data_dir": cfg.data_dir,
        "source_pairs_from": "test (clean)",
    }
    return clips, pairs, description


def load(cfg) -> TaskData:
    """The audio-visual world (shipped model) or READ's test clips with a user's model."""
    if cfg.dataset not in ("synthworld", *REAL_DATASETS):
        raise ValueError(
            f"the video-audio task reads synthworld, ks50 or vggsound, not {cfg.dataset}"
        )
    real = cfg.dataset in REAL_DATASETS
    if real and not (cfg.data_dir and cfg.checkpoint):
        raise ValueError(f"--dataset {cfg.dataset} needs --data-dir and --checkpoint")
    source = _source_model(cfg)
    if real:
        clips, pairs, description = _real_clips(cfg, source.config)
    else:
        clips, pairs, description = _world_clips(cfg, source)
    config = source.config
    params = jax.tree.map(np.asarray, source.params)
    towers = {
        "video": (
            video_encoder(config),
            params["video"],
            VIDEO_ADAPT_RULES,
            lambda videos: video_inputs(videos, config),
        ),
        "audio": (
            audio_encoder(config),
            params["audio"],
            AUDIO_ADAPT_RULES,
            lambda waves: audio_inputs(waves, config.audio.sample_rate, config),
        ),
    }
    query_tower = {"v2a": "video", "a2v": "audio"}

    def raw(c: Clips, modality: str):
        return c.videos if modality == "video" else c.waveforms

    def embed(c: Clips, modality: str) -> np.ndarray:
        encoder, tower_params, _, to_inputs = towers[modality]
        return study.embed(encoder, tower_params, to_inputs(raw(c, modality)))

    def query_inputs(direction: str, spec: str, seed: int):
        modality = query_tower[direction]
        shifted = shift_queries(
            direction, spec, clips.videos, clips.waveforms, seed, clips.sample_rate
        )
        return towers[modality][3](shifted)

    directions = tuple(cfg.direction_list())
    gallery_of = {"v2a": "audio", "a2v": "video"}
    files = {n: pretrained.file_sha256(source.directory / n) for n in pretrained.AV_SOURCE_FILES}
    description = {
        **description,
        "contents": f"{len(clips.videos)} clips",
        "queries": len(clips.videos),
        "gallery": len(clips.videos),
        "source_model": {"directory": str(source.directory), "sha256": files},
        "source_validation_r1": source.training.get("validation_clean_r1"),
    }
    log.info("video-audio task: %s", description["contents"])
    return TaskData(
        directions=directions,
        query_side=lambda d: towers[query_tower[d]][:3],
        query_inputs=query_inputs,
        galleries={d: embed(clips, gallery_of[d]) for d in directions},
        relevance={d: composed_relevance(np.arange(len(clips.videos))) for d in directions},
        source_pairs={
            d: (
                towers[query_tower[d]][3](raw(pairs, query_tower[d])),
                embed(pairs, gallery_of[d]),
            )
            for d in directions
        },
        temperature=float(contrastive_temperature(params["logit_scale"])),
        description=description,
    )


TASK = Task(
    name="video-audio",
    directions=DIRECTIONS,
    default_shifts=DEFAULT_SHIFTS,
    full_grid=full_grid,
    check_shift=check_shift,
    load=load,
    severity_sweep="gaussian_noise",
    datasets=("synthworld", *REAL_DATASETS),
)
