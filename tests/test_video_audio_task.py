"""The video-audio task: its data on a tiny world, the study end to end, and READ's layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_av_data import AUDIO, VIDEO, write_frame, write_wav
from toy import TINY_AV_WORLD, write_tiny_av_source

from experiments import main as main_job
from experiments.config import StudyConfig
from experiments.tasks import video_audio


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    directory = tmp_path_factory.mktemp("av_source")
    write_tiny_av_source(directory)
    return directory


def test_world_data_pairs_clip_i_with_clip_i_and_shifts_only_the_query_side(source):
    cfg = StudyConfig(task="video-audio", source_model=str(source), directions="v2a,a2v")
    data = video_audio.load(cfg)
    n = TINY_AV_WORLD["n_test"]
    assert data.description["contents"] == f"{n} clips"
    assert set(data.description["ceiling_r1"]) == {"v2a", "a2v"}
    for direction, gallery_dim in (("v2a", 8), ("a2v", 8)):
        gallery = data.galleries[direction]
        assert gallery.shape == (n, gallery_dim)
        np.testing.assert_allclose(np.linalg.norm(gallery, axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(data.relevance[direction][:, 0], np.arange(n))
        clean = data.query_inputs(direction, "clean", 0)
        assert len(clean) == n
        pair_inputs, pair_targets = data.source_pairs[direction]
        assert pair_inputs.shape[1:] == clean.shape[1:] and len(pair_targets) == 64
        assert not np.allclose(pair_inputs[:n], clean)  # the train split, not the test clips
    # the galleries are the other modality: v2a's is the audio tower's, a2v's the video's
    assert not np.allclose(data.galleries["v2a"], data.galleries["a2v"])
    videos = data.query_inputs("v2a", "clean", 0)
    assert videos.shape == (n, 2, 8, 8, 3) and videos.dtype == np.float32
    noisy = data.query_inputs("v2a", "gaussian_noise@5", 0)
    assert not np.allclose(noisy, videos)
    np.testing.assert_array_equal(noisy, data.query_inputs("v2a", "gaussian_noise@5", 0))
    mels = data.query_inputs("a2v", "clean", 0)
    assert mels.shape == (n, 8, 16)
    assert not np.allclose(data.query_inputs("a2v", "rain@5", 0), mels)
    encoder, params, rules = data.query_side("a2v")
    assert encoder(params, mels[:2]).shape == (2, 8)
    assert rules == video_audio.AUDIO_ADAPT_RULES


def test_video_audio_study_adapts_audio_queries(source, tmp_path):
    """The study end to end on a2v (v2a's data are checked above; the study's handling of a
    direction is the task's own business no further)."""
    out = main_job.main(
        [
            "--task", "video-audio", "--name", "av", "--output-dir", str(tmp_path),
            "--source-model", str(source), "--methods", "source,tcr",
            "--directions", "a2v", "--shifts", "a2v=rain@5", "--severity-sweep", "",
            "--diverse", "", "--no-ablations", "--batch-size", "8", "--stream-seeds", "0",
        ]
    )  # fmt: skip
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["direction"], r["method"]) for r in rows} == {
        ("a2v", m) for m in ("source", "tcr", "oracle")
    }
    assert {r["shifts"][0] for r in rows if r["group"] == "qs"} == {"rain@5"}
    tcr = next(r for r in rows if r["method"] == "tcr")
    assert tcr.get("rolled_back", 0) == 0 and 0.0 <= tcr["r1"] <= tcr["r10"] <= 100.0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"a2v"} and set(summary["a2v"]) == {"source", "tcr", "oracle"}
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "video-audio" and config["data"]["world"] == "AVWorld"
    assert config["data"]["source_model"]["sha256"]["model.safetensors"]
    assert "## a2v: R@1 under query shift" in (out / "table.md").read_text()


def write_read_layout(root, n=4, rate=16000):
    """``n`` clips in READ's Kinetics-50 layout: 3 frames of 10 px, 0.2 s tones at ``rate``."""
    ids = [f"clip{i}" for i in range(n)]
    entries = [{"video_id": i, "wav": "x", "video_path": "x", "labels": "cat"} for i in ids]
    root.mkdir(parents=True)
    (root / "ks50_test_refer.json").write_text(json.dumps({"data": entries}))
    t = np.arange(int(0.2 * rate)) / rate
    for n_clip, clip in enumerate(ids):
        write_wav(
            root / AUDIO / f"{clip}.wav", 0.3 * np.sin(2 * np.pi * 300 * (n_clip + 1) * t), rate
        )
        for k in range(3):
            write_frame(root / VIDEO / f"frame_{k}" / f"{clip}.jpg", 30 * k + 50 * n_clip, (10, 10))


def test_read_layout_loads_with_a_users_model_and_errors_name_what_is_missing(source, tmp_path):
    write_read_layout(tmp_path / "ks50")
    cfg = StudyConfig(
        task="video-audio", dataset="ks50", data_dir=str(tmp_path / "ks50"),
        checkpoint=str(source), directions="v2a,a2v",
    )  # fmt: skip
    data = video_audio.load(cfg)
    assert data.description["dataset"] == "ks50" and data.description["queries"] == 4
    assert data.query_inputs("v2a", "clean", 0).shape == (4, 2, 8, 8, 3)
    assert data.query_inputs("a2v", "wind@3", 0).shape == (4, 8, 16)
    assert data.galleries["a2v"].shape == (4, 8)
    with pytest.raises(ValueError, match="needs --data-dir and --checkpoint"):
        video_audio.load(StudyConfig(task="video-audio", dataset="vggsound"))
