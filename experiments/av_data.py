"""Video-audio test clips of Kinetics-50-C and VGGSound-C read from a local directory.

These are the benchmarks of READ (Yang et al., "Test-time adaption against multi-modal
reliability bias", ICLR 2024), distributed as extracted frames and wav files. Nothing is
downloaded: ``data_dir`` is the dataset's folder as READ's scripts lay it out.

Layout of ``data_dir`` (``ks50`` | ``vggsound``):

* the test list, ``ks50_test_refer.json`` | ``vgg_test_refer.json``, in ``data_dir`` or in
  ``data_dir/json_csv_files/`` (or any file given as ``list_file``, e.g. READ's generated
  ``clean/severity_0.json``): ``{"data": [{"video_id", "wav", "video_path", "labels"}, ...]}``.
  Only ``video_id`` and ``labels`` are used: the paths in these lists are the authors' own
  machines' (or placeholders), so files are found by ``video_id`` under ``data_dir``;
* clean frames: ``<video>/frame_<k>/<video_id>.jpg`` for ``k = 0 .. F-1`` (READ extracts
  F = 10 frames per clip), with ``<video>`` = ``image_mulframe_val256_k=50`` |
  ``image_mulframe_test``;
* clean audio: ``<audio>/<video_id>.wav`` with ``<audio>`` = ``audio_val256_k=50`` |
  ``audio_test``;
* corrupted variants (``corruption=("video", name, s)`` or ``("audio", name, s)``):
  ``<video>-C/<name>/severity_<s>/frame_<k>/<video_id>.jpg`` (15 image corruptions: the 16
  of ImageNet-C less speckle noise) and ``<audio>-C/<name>/severity_<s>/<video_id>.wav``
  (``gaussian_noise``, ``traffic``, ``crowd``, ``rain``, ``thunder``, ``wind``). The other
  modality stays clean.

What the reader does: it samples ``frames`` of the F frames evenly (the centre of each of
``frames`` equal stretches; frames repeat when ``frames > F``); a missing frame falls back to
the nearest earlier one, as READ's loader does, and a clip without any frame is missing. Frames
are read as RGB, resized (bicubic) so the short side is ``image_size`` and centre-cropped to a
square. Audio is read with ``scipy.io.wavfile`` (8/16/32-bit integer or float PCM; channels
averaged to mono), resampled to ``sample_rate`` with ``scipy.signal.resample_poly``, and cut
to its first ``seconds`` or zero-padded at the end. Labels are the list's label strings.

Not supported: video files (only extracted jpg/png frames), compressed audio (mp3, flac), the
class-index csv (labels stay strings), READ's mixed-severity lists, and the training split.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
from typing import NamedTuple

import numpy as np
import scipy.io.wavfile
import scipy.signal
from PIL import Image

log = logging.getLogger("rest_jax.av_data")

AV_DATASETS = ("ks50", "vggsound")
# READ's corrupted variants (its make_c_video.py / make_c_audio.py lists).
READ_VIDEO_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
READ_AUDIO_CORRUPTIONS = ("gaussian_noise", "traffic", "crowd", "rain", "thunder", "wind")


class _Layout(NamedTuple):
    list_file: str
    video_dir: str
    audio_dir: str


_LAYOUTS = {
    "ks50": _Layout("ks50_test_refer.json", "image_mulframe_val256_k=50", "audio_val256_k=50"),
    "vggsound": _Layout("vgg_test_refer.json", "image_mulframe_test", "audio_test"),
}


class AVClips(NamedTuple):
    """Clips with their frames and sound.

    Attributes:
      videos: uint8 ``(N, T, H, W, 3)`` frames.
      waveforms: float32 ``(N, S)`` mono audio in [-1, 1] (integer PCM scaled).
      ids: ``(N,)`` str video ids, in list order.
      labels: ``(N,)`` str labels as the list gives them (comma-separated when several).
    """

    videos: np.ndarray
    waveforms: np.ndarray
    ids: np.ndarray
    labels: np.ndarray


def read_av_clips(
    data_dir,
    dataset: str,
    *,
    frames: int,
    image_size: int,
    sample_rate: int = 16000,
    seconds: float,
    corruption: tuple[str, str, int] | None = None,
    list_file=None,
    max_clips: int | None = None,
    skip_missing: bool = False,
) -> AVClips:
    """Reads the test clips of READ's Kinetics-50-C or VGGSound-C (layout: module docstring).

    Args:
      data_dir: the dataset's folder.
      dataset: ``"ks50"`` or ``"vggsound"``.
      frames: frames per clip ``T >= 1``, sampled evenly.
      image_size: side of the square frames, px.
      sample_rate: audio samples per second after resampling.
      seconds: clip length in seconds (audio cut or zero-padded to it).
      corruption: None (clean) or ``(modality, name, severity)``, e.g. ``("audio", "rain",
        3)``: that modality is read from its corrupted variant.
      list_file: the clip list (default: the dataset's test list, see the docstring).
      max_clips: read only the first ``max_clips`` clips of the list.
      skip_missing: leave out clips whose wav or frames are missing (logged) instead of
        raising FileNotFoundError.

    Returns:
      :class:`AVClips`.
    """
    if dataset not in _LAYOUTS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {AV_DATASETS}")
    for value, what in (
        (frames, "frames"),
        (image_size, "image_size"),
        (sample_rate, "sample_rate"),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be a positive int, got {value!r}")
    if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    if max_clips is not None and (not isinstance(max_clips, int) or max_clips < 1):
        raise ValueError(f"max_clips must be a positive int or None, got {max_clips!r}")
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist")
    layout = _LAYOUTS[dataset]
    video_root, audio_root = _roots(root, layout, corruption)
    entries = _read_list(root, layout, list_file)
    if max_clips is not None:
        entries = entries[:max_clips]
    available = _frame_count(video_root)
    picks = [min(available - 1, int((j + 0.5) * available / frames)) for j in range(frames)]
    length = int(round(seconds * sample_rate))
    clips, missing = [], []
    for video_id, label in entries:
        wav = audio_root / f"{video_id}.wav"
        paths = [_frame_path(video_root, k, video_id) for k in picks]
        if not wav.is_file():
            missing.append(wav)
            continue
        if any(p is None for p in paths):
            missing.append(video_root / "frame_0" / f"{video_id}.jpg")
            continue
        clips.append((video_id, label, wav, paths))
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        message = f"{len(missing)} of {len(entries)} clips lack files (first: {shown})"
        if not skip_missing:
            raise FileNotFoundError(f"{message}; pass skip_missing=True to leave them out")
        log.warning("%s; left out", message)
    if not clips:
        raise ValueError(f"no clip of the list has its files under {root}")
    videos = np.empty((len(clips), frames, image_size, image_size, 3), np.uint8)
    waveforms = np.empty((len(clips), length), np.float32)
    for n, (_, _, wav, paths) in enumerate(clips):
        for t, path in enumerate(paths):
            videos[n, t] = _read_frame(path, image_size)
        waveforms[n] = _read_wav(wav, sample_rate, length)
    return AVClips(
        videos=videos,
        waveforms=waveforms,
        ids=np.array([c[0] for c in clips], dtype=str),
        labels=np.array([c[1] for c in clips], dtype=str),
    )


def _roots(root: pathlib.Path, layout: _Layout, corruption) -> tuple[pathlib.Path, pathlib.Path]:
    """The frame and audio folders of the clean data or of a corrupted variant."""
    video_root, audio_root = root / layout.video_dir, root / layout.audio_dir
    if corruption is None:
        return video_root, audio_root
    if not isinstance(corruption, tuple | list) or len(corruption) != 3:
        raise ValueError(
            f"corruption must be None or (modality, name, severity), got {corruption!r}"
        )
    modality, name, severity = corruption
    known = {"video": READ_VIDEO_CORRUPTIONS, "audio": READ_AUDIO_CORRUPTIONS}
    if modality not in known:
        raise ValueError(f"corruption modality must be 'video' or 'audio', got {modality!r}")
    if name not in known[modality]:
        raise ValueError(
            f"unknown {modality} corruption {name!r} of READ's benchmarks; known: "
            f"{', '.join(known[modality])}"
        )
    if isinstance(severity, bool) or severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be an int in 1..5, got {severity!r}")
    if modality == "video":
        video_root = root / f"{layout.video_dir}-C" / name / f"severity_{severity}"
    else:
        audio_root = root / f"{layout.audio_dir}-C" / name / f"severity_{severity}"
    return video_root, audio_root


def _read_list(root: pathlib.Path, layout: _Layout, list_file) -> list[tuple[str, str]]:
    """``(video_id, labels)`` of every clip of the list, in its order."""
    if list_file is not None:
        candidates = [pathlib.Path(list_file)]
    else:
        candidates = [root / layout.list_file, root / "json_csv_files" / layout.list_file]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"clip list not found; looked for {', '.join(str(p) for p in candidates)}"
        )
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError(f'{path}: expected {{"data": [{{"video_id": ..., "labels": ...}}, ...]}}')
    if not items:
        raise ValueError(f"{path}: the clip list is empty")
    entries = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("video_id"), str):
            raise ValueError(f"{path}: entry {i} has no video_id string")
        entries.append((item["video_id"], str(item.get("labels", ""))))
    return entries


def _frame_count(video_root: pathlib.Path) -> int:
    """F: the number of consecutive ``frame_<k>`` folders from ``frame_0``."""
    count = 0
    while (video_root / f"frame_{count}").is_dir():
        count += 1
    if count == 0:
        raise FileNotFoundError(f"no frame folders (frame_0, frame_1, ...) in {video_root}")
    return count


def _frame_path(video_root: pathlib.Path, k: int, video_id: str) -> pathlib.Path | None:
    """Frame ``k`` of a clip, or the nearest earlier one that exists (READ's fallback)."""
    for j in range(k, -1, -1):
        for suffix in (".jpg", ".png"):
            path = video_root / f"frame_{j}" / f"{video_id}{suffix}"
            if path.is_file():
                return path
    return None


def _read_frame(path: pathlib.Path, size: int) -> np.ndarray:
    """RGB frame, short side resized to ``size`` (bicubic), centre-cropped to a square."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size)), np.uint8)


def _read_wav(path: pathlib.Path, sample_rate: int, length: int) -> np.ndarray:
    """Mono float audio at ``sample_rate``, cut or zero-padded to ``length`` samples."""
    try:
        rate, data = scipy.io.wavfile.read(path)
    except ValueError as error:
        raise ValueError(f"{path}: not a readable PCM wav file ({error})") from error
    if data.dtype == np.uint8:
        x = (data.astype(np.float64) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        x = data.astype(np.float64) / float(-np.iinfo(data.dtype).min)
    else:
        x = data.astype(np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.size == 0:
        raise ValueError(f"{path}: the wav file holds no samples")
    if rate != sample_rate:
        g = math.gcd(int(rate), sample_rate)
        x = scipy.signal.resample_poly(x, sample_rate // g, int(rate) // g)
    out = np.zeros(length, np.float32)
    out[: min(length, x.size)] = x[:length]
    return out
