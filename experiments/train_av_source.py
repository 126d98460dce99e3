"""Trains the audio-visual world's source model from scratch and writes its directory.

    python -m experiments.train_av_source --out rest_jax/assets/av_source

Generates AVWorld's training split (``rest_jax.data.avworld``), trains the video and audio
towers (``rest_jax.models.audio_visual``) with CLIP's symmetric contrastive loss
(``experiments.training``) and mild training augmentation (per-frame photometric jitter,
noise and blur, as ``experiments.augment``; white noise on the waveforms), measures clean
R@1 in both directions on the validation split, and writes ``config.json``,
``model.safetensors`` and ``training.json`` (``rest_jax.pretrained.save_av_source``). It prints
the files' SHA-256; to ship a retrained model, replace ``AV_SOURCE_SHA256`` in
``rest_jax/pretrained.py`` with them. Deterministic for a seed on one machine and set of
versions; float rounding differs between CPUs, which is why the result is shipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import study, training
from rest_jax import pretrained
from rest_jax.data.audio_features import (
    check_waveforms,
    frame_sizes,
    hann_window,
    log_mel,
    mel_filterbank,
)
from rest_jax.data.avworld import AVWorldConfig, generate_av_split
from rest_jax.metrics import retrieval_metrics
from rest_jax.models.audio_visual import (
    VIDEO_MEAN,
    VIDEO_STD,
    AudioVisualModel,
    AVConfig,
    audio_encoder,
    audio_inputs,
    video_encoder,
    video_inputs,
)

WORLD = AVWorldConfig()
MODEL = AVConfig()
# The shipped recipe: the default towers (video width 48, 1 spatial + 1 temporal block; audio
# width 64, 2 blocks), 1800 steps of 128 clips (~25 minutes on 2 shared CPU cores).
SCHEDULE = training.SourceModelConfig(
    steps=1800, batch_size=128, learning_rate=2e-3, warmup_steps=100, weight_decay=0.05
)
# The fields of ``training.SourceModelConfig`` that the AV trainer uses (the rest size CLIP).
_SCHEDULE_KEYS = ("steps", "batch_size", "learning_rate", "warmup_steps", "weight_decay", "seed")


@dataclasses.dataclass(frozen=True)
class AVAugmentConfig:
    """Strength of the training augmentations, as ``experiments.augment`` for images (applied
    per frame) plus white noise on the sound (0 switches a part off).

    Attributes:
      p_frame: probability that a frame is jittered, blurred and noised.
      brightness: offset U(-b, b); contrast: factor U(1 - c, 1 + c) around the frame mean.
      blur: 3-tap separable blur ``[a, 1 - 2a, a]``, ``a ~ U(0, blur)`` (half the frames).
      noise_std: Gaussian pixel noise with std U(0, s).
      p_audio: probability that a clip's sound gets noise.
      audio_noise: white noise of std U(0, s) on the waveform, added in the mel power domain
        (:func:`noisy_mels`).
    """

    p_frame: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.2
    blur: float = 0.2
    noise_std: float = 0.05
    p_audio: float = 0.5
    audio_noise: float = 0.02


AUGMENT = AVAugmentConfig()


def video_draws(rng: np.random.Generator, shape: tuple, cfg: AVAugmentConfig) -> dict:
    """The random numbers of :func:`augment_videos` for uint8 videos of ``shape`` (numpy's
    generator: much faster on CPU than jax's counter-based one)."""
    b, t = shape[:2]
    per_frame = (b, t, 1, 1, 1)
    chosen = rng.random(per_frame) < cfg.p_frame
    blur = rng.uniform(0, cfg.blur, per_frame) * (rng.random(per_frame) < 0.5)
    return {
        "chosen": chosen,
        "contrast": 1.0 + rng.uniform(-cfg.contrast, cfg.contrast, per_frame),
        "brightness": rng.uniform(-cfg.brightness, cfg.brightness, per_frame),
        "blur": blur,
        "noise": rng.uniform(0, cfg.noise_std, per_frame)
        * rng.standard_normal(shape, dtype=np.float32),
    }


def augment_videos(videos, draws: dict):
    """uint8 ``(B, T, H, W, 3)`` -> normalised float32 inputs of jittered, blurred and noised
    frames, each frame with its own draws (:func:`video_draws`):
    ``x <- (x - mean) c + mean + b``, a 3-tap blur ``[a, 1 - 2a, a]`` along both axes, ``+ n``,
    clipped to [0, 1]."""
    x = videos.astype(jnp.float32) / 255.0
    mean = x.mean(axis=(2, 3, 4), keepdims=True)
    y = (x - mean) * draws["contrast"] + mean + draws["brightness"]
    a = draws["blur"]
    for axis in (2, 3):
        size = y.shape[axis]
        widths = [(0, 0)] * 5
        widths[axis] = (1, 1)
        padded = jnp.pad(y, widths, mode="edge")
        up = jax.lax.slice_in_dim(padded, 0, size, axis=axis)
        down = jax.lax.slice_in_dim(padded, 2, size + 2, axis=axis)
        y = a * up + (1 - 2 * a) * y + a * down
    y = jnp.clip(jnp.where(draws["chosen"], y + draws["noise"], x), 0.0, 1.0)
    return (y - VIDEO_MEAN) / VIDEO_STD


def noise_mel_power(config: AVConfig) -> np.ndarray:
    """Expected mel power ``(mel_bins,)`` of unit-variance white noise: a windowed frame's DFT
    has ``E|X_k|^2 = sum_n w[n]^2`` in every bin, so bin ``m`` gets that times
    ``sum_k F[k, m]`` (the Hann window and filterbank of ``log_mel``)."""
    a = config.audio
    length, _, fft_length = frame_sizes(a.sample_rate)
    bank = mel_filterbank(a.mel_bins, fft_length, a.sample_rate)
    return (np.sum(hann_window(length) ** 2) * bank.sum(0)).astype(np.float32)


def audio_draws(rng: np.random.Generator, shape: tuple, cfg: AVAugmentConfig) -> dict:
    """The random numbers of :func:`noisy_mels` for log-mels of ``shape`` ``(B, F, M)``."""
    b = shape[0]
    std = rng.uniform(0, cfg.audio_noise, (b, 1, 1)) * (rng.random((b, 1, 1)) < cfg.p_audio)
    fluctuation = rng.standard_exponential((2, *shape), dtype=np.float32).mean(0)
    return {"variance": np.square(std).astype(np.float32), "fluctuation": fluctuation}


def noisy_mels(mels, draws: dict, config: AVConfig, noise_power):
    """Raw log-mels ``(B, F, M)`` of clean clips -> normalised inputs of the clips plus white
    noise of variance ``s^2`` (:func:`audio_draws`: ``s ~ U(0, audio_noise)`` with probability
    ``p_audio``, else 0): ``log(exp(x) + s^2 P_m g)``, ``P_m`` :func:`noise_mel_power` and
    ``g ~ Gamma(2, 1) / 2`` the noise's fluctuation in one bin (the mean of two unit
    exponentials; the signal-noise cross term has mean zero and is left out)."""
    y = jnp.log(jnp.exp(mels) + draws["variance"] * noise_power * draws["fluctuation"])
    return (y - config.audio.mel_mean) / config.audio.mel_std


@dataclasses.dataclass(frozen=True)
class _AsTwoTower:
    """The contrastive trainer's view of the model: ``embed(params, images=, texts=)``
    (``experiments.training.make_train_step``), here videos and log-mels."""

    model: AudioVisualModel

    def embed(self, params, images, texts):
        return {
            "image": self.model.encode_video(params, images),
            "text": self.model.encode_audio(params, texts),
        }

    def init(self, rng):
        return self.model.init(rng)


def clean_r1(model: AudioVisualModel, params, split) -> dict[str, float]:
    """Clean R@1 (percent) of video -> audio and audio -> video (query i's item is i)."""
    cfg = model.config
    videos = study.embed(video_encoder(cfg), params["video"], video_inputs(split.videos, cfg))
    sounds = study.embed(
        audio_encoder(cfg), params["audio"], audio_inputs(split.waveforms, split.sample_rate, cfg)
    )
    ids = np.arange(len(videos))
    return {
        "v2a": round(retrieval_metrics(videos @ sounds.T, ids)["r1"], 2),
        "a2v": round(retrieval_metrics(sounds @ videos.T, ids)["r1"], 2),
    }


def train(
    out: pathlib.Path | None,
    world: AVWorldConfig = WORLD,
    config: AVConfig = MODEL,
    schedule: training.SourceModelConfig = SCHEDULE,
    augment: AVAugmentConfig = AUGMENT,
    num_train: int | None = None,
    eval_test: bool = False,
    progress: bool = True,
):
    """Trains; writes the directory ``out`` (unless None). Returns ``(params, record)``.

    The record's ``train_seconds`` is the whole run before evaluation: generating the split
    (``generate_seconds``), its log-mels (``log_mel_seconds``) and the training steps.
    """
    start = time.perf_counter()
    data = generate_av_split(world, "train", schedule.seed, num_train)
    gen_seconds = time.perf_counter() - start
    model = AudioVisualModel(config)
    params = training.init_params(_AsTwoTower(model), schedule.seed)
    a = config.audio
    mels = log_mel(check_waveforms(data.waveforms, data.sample_rate, a.sample_rate, a.num_samples))
    mel_seconds = time.perf_counter() - start - gen_seconds
    power = jnp.asarray(noise_mel_power(config))
    augment_v = jax.jit(augment_videos)
    augment_a = jax.jit(lambda m, draws: noisy_mels(m, draws, config, power))
    rng = np.random.default_rng(schedule.seed + 1)
    n = len(data)

    def make_batch(picks, _):
        videos, batch_mels = data.videos[picks], mels[picks]
        return (
            augment_v(videos, video_draws(rng, videos.shape, augment)),
            augment_a(batch_mels, audio_draws(rng, batch_mels.shape, augment)),
        )

    params, losses = training.train_contrastive_batches(
        _AsTwoTower(model), params, make_batch, np.arange(n), n, schedule, progress=progress
    )
    params = jax.tree.map(np.asarray, params)
    seconds = time.perf_counter() - start
    val = generate_av_split(world, "val", 0)
    record = {
        "world": world.to_dict(),
        "model": config.to_dict(),
        "schedule": {k: getattr(schedule, k) for k in _SCHEDULE_KEYS},
        "augment": dataclasses.asdict(augment),
        "num_train": n,
        "train_mel_mean_std": [round(float(mels.mean()), 3), round(float(mels.std()), 3)],
        "log_mel_seconds": round(mel_seconds),
        "final_loss": round(float(losses[-50:].mean()), 4),
        "generate_seconds": round(gen_seconds),
        "train_seconds": round(seconds),
        "validation_clean_r1": clean_r1(model, params, val),
        "validation_ceiling": {k: round(v, 2) for k, v in val.ceiling.items()},
        "versions": {"python": platform.python_version(), "jax": jax.__version__},
        "command": " ".join(["python -m experiments.train_av_source", *sys.argv[1:]]),
    }
    if eval_test:
        test = generate_av_split(world, "test", 0)
        record["test_clean_r1"] = clean_r1(model, params, test)
        record["test_ceiling"] = {k: round(v, 2) for k, v in test.ceiling.items()}
    if out is not None:
        pretrained.save_av_source(out, config, params, record)
    return params, record


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.train_av_source", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="directory to write the model to")
    parser.add_argument("--steps", type=int, default=SCHEDULE.steps, help="training steps")
    parser.add_argument("--batch-size", type=int, default=SCHEDULE.batch_size)
    parser.add_argument("--learning-rate", type=float, default=SCHEDULE.learning_rate)
    parser.add_argument("--num-train", type=int, default=None, help="training clips")
    parser.add_argument("--test", action="store_true", help="also measure the test split")
    args = parser.parse_args(argv)
    schedule = dataclasses.replace(
        SCHEDULE, steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate
    )
    _, record = train(
        pathlib.Path(args.out), schedule=schedule, num_train=args.num_train, eval_test=args.test
    )
    keys = ("final_loss", "train_seconds", "validation_clean_r1", "test_clean_r1")
    print(json.dumps({k: record[k] for k in keys if k in record}))
    hashes = {
        name: pretrained.file_sha256(pathlib.Path(args.out) / name)
        for name in pretrained.AV_SOURCE_FILES
    }
    print("AV_SOURCE_SHA256 = " + json.dumps(hashes, indent=4))


if __name__ == "__main__":
    main()
