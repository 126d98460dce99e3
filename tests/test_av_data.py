"""Tests for experiments/av_data.py on a tiny directory in READ's Kinetics-50-C layout."""

import json
import wave

import numpy as np
import pytest
from PIL import Image

from experiments.av_data import read_av_clips

VIDEO, AUDIO = "image_mulframe_val256_k=50", "audio_val256_k=50"
IDS = ("clipA", "-clipB", "clip_C")
LABELS = ("dying_hair", "snowboarding", "petting_cat")
FRAMES = 4  # frame_0 .. frame_3


def write_wav(path, signal, rate, channels=1):
    """16-bit PCM wav with the stdlib ``wave`` module; ``signal`` in [-1, 1], ``(S,)`` or
    ``(S, channels)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(signal, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def write_frame(path, value, size=(20, 12)):
    """A flat frame of grey ``value`` (W x H = ``size``) with a white centre pixel block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    image = np.full((h, w, 3), value, np.uint8)
    image[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2] = 255
    Image.fromarray(image).save(path, format="JPEG", quality=95)


def frame_value(n, k, corrupted=False):
    return 20 + 40 * k + 5 * n + (3 if corrupted else 0)


def tone(rate, seconds, freq=440.0, amp=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


@pytest.fixture
def ks50(tmp_path):
    """3 clips: 8 kHz mono, 16 kHz stereo (short: padded), 22.05 kHz mono; one frame missing."""
    root = tmp_path / "Kinetics50"
    entries = [
        {"video_id": i, "wav": f"data_path/{AUDIO}/{i}.wav", "video_path": "x", "labels": lab}
        for i, lab in zip(IDS, LABELS)
    ]
    (root / "json_csv_files").mkdir(parents=True)
    (root / "json_csv_files" / "ks50_test_refer.json").write_text(json.dumps({"data": entries}))
    write_wav(root / AUDIO / "clipA.wav", tone(8000, 1.0), 8000)
    stereo = np.stack([tone(16000, 0.5), tone(16000, 0.5, amp=0.25)], axis=1)
    write_wav(root / AUDIO / "-clipB.wav", stereo.reshape(-1), 16000, channels=2)
    write_wav(root / AUDIO / "clip_C.wav", tone(22050, 1.2, freq=1000.0), 22050)
    for n, clip in enumerate(IDS):
        for k in range(FRAMES):
            if clip == "clip_C" and k == 3:
                continue  # READ's loader falls back to frame 2
            write_frame(root / VIDEO / f"frame_{k}" / f"{clip}.jpg", frame_value(n, k))
            variant = root / f"{VIDEO}-C" / "fog" / "severity_2" / f"frame_{k}" / f"{clip}.jpg"
            write_frame(variant, frame_value(n, k, corrupted=True))
        noisy = tone(8000, 1.0) + 0.1 * np.random.default_rng(n).standard_normal(8000)
        write_wav(root / f"{AUDIO}-C" / "rain" / "severity_3" / f"{clip}.wav", noisy, 8000)
    return root


def read(root, **kwargs):
    args = dict(frames=2, image_size=8, sample_rate=16000, seconds=0.75)
    return read_av_clips(root, "ks50", **{**args, **kwargs})


def test_reads_clean_clips(ks50):
    clips = read(ks50, frames=4)
    assert clips.videos.shape == (3, 4, 8, 8, 3) and clips.videos.dtype == np.uint8
    assert clips.waveforms.shape == (3, 12000) and clips.waveforms.dtype == np.float32
    assert clips.ids.tolist() == list(IDS) and clips.labels.tolist() == list(LABELS)
    # Frame k of clip n: corner pixel keeps the flat grey of frame k (JPEG: +-3).
    corner = clips.videos[:, :, 0, 0, 0].astype(int)
    expected = np.array([[frame_value(n, k) for k in range(4)] for n in range(3)])
    expected[2, 3] = frame_value(2, 2)  # the missing frame_3 of clip_C falls back to frame_2
    assert np.all(np.abs(corner - expected) <= 3), corner
    # 20 x 12 frames: short side 12 -> 8, then centre crop: the white block stays centred.
    assert clips.videos[0, 0, 4, 4, 0] > 200 and clips.videos[0, 0, 0, 0, 0] < 100


def test_even_frame_sampling(ks50):
    corner = read(ks50, frames=2).videos[0, :, 0, 0, 0].astype(int)
    # Two of four frames: the centres of [0, 2) and [2, 4) -> frames 1 and 3.
    assert np.all(np.abs(corner - [frame_value(0, 1), frame_value(0, 3)]) <= 3)
    corner = read(ks50, frames=8).videos[0, :, 0, 0, 0].astype(int)
    picks = [frame_value(0, k) for k in (0, 0, 1, 1, 2, 2, 3, 3)]
    assert np.all(np.abs(corner - picks) <= 3)


def test_audio_resampled_mixed_down_and_cut_or_padded(ks50):
    wav = read(ks50).waveforms
    t = np.arange(12000) / 16000
    # 8 kHz 440 Hz tone -> 16 kHz: the same tone (resample_poly's edge ramp aside).
    np.testing.assert_allclose(
        wav[0, 200:-200], 0.5 * np.sin(2 * np.pi * 440 * t[200:-200]), atol=0.01
    )
    # Stereo is averaged (0.5 and 0.25 amplitude -> 0.375); 0.5 s padded with zeros to 0.75 s.
    np.testing.assert_allclose(wav[1, :8000], 0.375 * np.sin(2 * np.pi * 440 * t[:8000]), atol=1e-3)
    assert np.all(wav[1, 8000:] == 0)
    # 22.05 kHz, 1.2 s -> cut to the first 0.75 s at 16 kHz, a 1 kHz tone.
    spectrum = np.abs(np.fft.rfft(wav[2]))
    assert abs(np.fft.rfftfreq(12000, 1 / 16000)[np.argmax(spectrum)] - 1000) < 2
    assert read(ks50, sample_rate=8000, seconds=2.0).waveforms.shape == (3, 16000)


def test_corrupted_variants(ks50):
    clean = read(ks50, frames=4)
    video_c = read(ks50, frames=4, corruption=("video", "fog", 2))
    diff = video_c.videos[:, :, 0, 0, 0].astype(int) - clean.videos[:, :, 0, 0, 0].astype(int)
    assert np.all(np.abs(diff - 3) <= 3) and np.mean(diff) > 1.5  # the -C frames are read
    assert np.array_equal(video_c.waveforms, clean.waveforms)  # audio stays clean
    audio_c = read(ks50, corruption=("audio", "rain", 3))
    assert np.array_equal(audio_c.videos, read(ks50).videos)
    assert not np.allclose(audio_c.waveforms, read(ks50).waveforms, atol=0.02)


def test_list_options(ks50, tmp_path):
    assert read(ks50, max_clips=2).ids.tolist() == list(IDS[:2])
    other = tmp_path / "severity_0.json"
    other.write_text(json.dumps({"data": [{"video_id": "clip_C", "labels": "x"}]}))
    clips = read(ks50, list_file=other)
    assert clips.ids.tolist() == ["clip_C"] and clips.labels.tolist() == ["x"]


def test_missing_files(ks50):
    (ks50 / AUDIO / "-clipB.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 clips lack files \(first: .*-clipB.wav\)"):
        read(ks50)
    assert read(ks50, skip_missing=True).ids.tolist() == ["clipA", "clip_C"]
    for k in range(FRAMES):
        (ks50 / VIDEO / f"frame_{k}" / "clipA.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="2 of 3 clips lack files"):
        read(ks50)
    with pytest.raises(FileNotFoundError, match="frame folders"):
        read(ks50, corruption=("video", "fog", 3))
    with pytest.raises(FileNotFoundError, match="clip list not found"):
        read_av_clips(ks50, "vggsound", frames=1, image_size=8, seconds=1.0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read(ks50 / "nowhere")


def test_bad_lists_and_arguments(ks50, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"data": []}))
    with pytest.raises(ValueError, match="the clip list is empty"):
        read(ks50, list_file=empty)
    (tmp_path / "bad.json").write_text(json.dumps([{"video_id": "a"}]))
    with pytest.raises(ValueError, match="expected"):
        read(ks50, list_file=tmp_path / "bad.json")
    (tmp_path / "absent.json").write_text(json.dumps({"data": [{"video_id": "zz"}]}))
    with pytest.raises(ValueError, match="no clip of the list"):
        read(ks50, list_file=tmp_path / "absent.json", skip_missing=True)
    with pytest.raises(ValueError, match="unknown dataset 'kinetics'"):
        read_av_clips(ks50, "kinetics", frames=1, image_size=8, seconds=1.0)
    with pytest.raises(ValueError, match="unknown audio corruption 'fog'"):
        read(ks50, corruption=("audio", "fog", 1))
    with pytest.raises(ValueError, match="speckle_noise|unknown video corruption"):
        read(ks50, corruption=("video", "speckle_noise", 1))
    with pytest.raises(ValueError, match="modality"):
        read(ks50, corruption=("text", "fog", 1))
    with pytest.raises(ValueError, match="severity"):
        read(ks50, corruption=("video", "fog", 0))
    with pytest.raises(ValueError, match="frames must be a positive int"):
        read(ks50, frames=0)
    with pytest.raises(ValueError, match="seconds"):
        read(ks50, seconds=0)
