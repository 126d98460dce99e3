"""The composed task: its shifts, the main job on a tiny world, and the FashionIQ / CIRR
readers with a Hugging Face CLIP on tiny generated directories."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

from experiments import composed_data
from experiments import main as main_job
from experiments.config import StudyConfig, parse_args
from experiments.tasks import composed
from rest_jax import pretrained
from rest_jax.models.combiner import CombinerConfig, init_combiner


def test_shift_specs_name_what_they_hit():
    assert composed.parts("fog@3") == ("fog@3", None)
    assert composed.parts("keyboard@5") == (None, "keyboard@5")
    assert composed.parts("fog@3:synonym_replacement@0.3") == ("fog@3", "synonym_replacement@0.3")
    assert composed.parts("clean") == (None, None)
    for spec in composed.DEFAULT_SHIFTS["cir"].split(","):
        composed.check_shift(spec, "cir")
    for spec, message in (
        ("fog@9", "integer 1-5"),
        ("keyboard@5:fog@3", "unknown image corruption 'keyboard'"),
        ("fog@3:keyboard@5:fog@1", "at most one image and one text shift"),
        ("blur@2", "unknown text corruption 'blur'"),
    ):
        with pytest.raises(ValueError, match=message):
            composed.check_shift(spec, "cir")
    with pytest.raises(ValueError, match="unknown direction 'i2t'"):
        composed.check_shift("fog@3", "i2t")
    grid = composed.full_grid("cir")
    assert len(grid) == len(set(grid)) and "zoom_blur@5" in grid and "word_swap@0.3" in grid
    assert any(":" in s for s in grid)
    cfg = parse_args(["--task", "composed"])
    assert cfg.direction_list() == ["cir"] and cfg.severity_sweep_list() == ["gaussian_noise"]


def test_bad_dataset_and_combiner_flags_are_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--task", "composed", "--dataset", "coco"])
    assert "not a dataset of task composed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--combiner", "zero-shot"])
    assert "only the composed task composes queries" in capsys.readouterr().err


def write_tiny_combiner(directory: pathlib.Path, dim: int) -> None:
    config = CombinerConfig(dim=dim, hidden=8)
    params = jax.tree.map(np.asarray, init_combiner(config, 0))
    pretrained.save_world_combiner(
        directory, config, params, {"validation": None, "recipe": {"temperature": 0.02}}
    )


def test_composed_main_job_on_a_tiny_world(tmp_path):
    from toy import write_tiny_world_source

    write_tiny_world_source(tmp_path / "source")
    write_tiny_combiner(tmp_path / "combiner", dim=64)
    args = [
        "--task", "composed", "--name", "cir", "--output-dir", str(tmp_path / "runs"),
        "--cache-dir", str(tmp_path / "cache"), "--source-model", str(tmp_path / "source"),
        "--combiner", str(tmp_path / "combiner"), "--methods", "tent",
        "--shifts", "cir=fog@3:keyboard@5", "--severity-sweep", "", "--diverse", "",
        "--no-ablations", "--no-oracle", "--batch-size", "8", "--max-queries", "16",
        "--stream-seeds", "0",
    ]  # fmt: skip
    out = main_job.main(args)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["group"], r["method"]) for r in rows} == {("clean", "source"), ("qs", "tent")}
    for r in rows:
        assert r["direction"] == "cir" and 0 <= r["r1"] <= r["r10"] <= 100
    assert next(r for r in rows if r["method"] == "tent")["forgetting_r1"] is not None
    summary = json.loads((out / "summary.json").read_text())["cir"]
    assert set(summary) == {"tent"} and "mean_shifted_r10" in summary["tent"]
    config = json.loads((out / "config.json").read_text())
    data = config["data"]
    assert config["task"] == "composed" and data["composition"] == "combiner"
    assert data["queries"] == 16 and data["gallery"] == 32 and data["ceiling_r1"] == 100.0
    assert set(data["combiner_sha256"]) == set(pretrained.WORLD_COMBINER_FILES)
    table = (out / "table.md").read_text()
    assert "16 composed queries, 32 gallery images" in table
    assert "## cir: R@1 under query shift" in table and "## cir: R@10 under query shift" in table


def test_both_inputs_shift_and_clean_inputs_stay(tmp_path):
    from toy import write_tiny_world_source

    write_tiny_world_source(tmp_path / "source")
    cfg = StudyConfig(
        task="composed", source_model=str(tmp_path / "source"), combiner="zero-shot",
        max_queries=8, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    data = composed.load(cfg)
    clean = data.query_inputs("cir", "clean", 0)
    image = data.query_inputs("cir", "gaussian_noise@5", 0)
    text = data.query_inputs("cir", "keyboard@7", 0)
    both = data.query_inputs("cir", "gaussian_noise@5:keyboard@7", 0)
    assert not np.array_equal(image["image"], clean["image"])
    np.testing.assert_array_equal(image["text"], clean["text"])
    assert not np.array_equal(text["text"], clean["text"])
    np.testing.assert_array_equal(text["image"], clean["image"])
    np.testing.assert_array_equal(both["image"], image["image"])
    np.testing.assert_array_equal(both["text"], text["text"])
    encoder, params, rules = data.query_side("cir")
    assert set(params) == {"vision", "text"}  # zero-shot: no combiner parameters
    assert data.relevance["cir"].shape == (8, 1) and data.galleries["cir"].shape[0] == 16
    with pytest.raises(ValueError, match="shipped combiner was trained on the shipped source"):
        composed.load(StudyConfig(task="composed", source_model=str(tmp_path / "source")))


def _png(path: pathlib.Path, rng) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)


def write_fashioniq(root: pathlib.Path) -> None:
    rng = np.random.default_rng(0)
    for category in ("dress", "toptee"):
        names = [f"{category}{i}" for i in range(6)]
        for name in names:
            _png(root / "images" / f"{name}.png", rng)
        for split in ("train", "val"):
            (root / "image_splits").mkdir(parents=True, exist_ok=True)
            (root / "image_splits" / f"split.{category}.{split}.json").write_text(json.dumps(names))
            caps = [
                {
                    "candidate": names[i],
                    "target": names[i + 1],
                    "captions": ["is red", "has a blue collar."],
                }
                for i in range(5)
            ]
            (root / "captions").mkdir(parents=True, exist_ok=True)
            (root / "captions" / f"cap.{category}.{split}.json").write_text(json.dumps(caps))


def write_cirr(root: pathlib.Path) -> None:
    rng = np.random.default_rng(1)
    names = [f"dev-{i}-img0" for i in range(7)]
    for name in names:
        _png(root / "dev" / f"{name}.png", rng)
    (root / "image_splits").mkdir(parents=True)
    (root / "image_splits" / "split.rc2.val.json").write_text(
        json.dumps({n: f"./dev/{n}.png" for n in names})
    )
    caps = [
        {
            "pairid": i,
            "reference": names[i],
            "target_hard": names[(i + 3) % 7],
            "caption": "a red one",
        }
        for i in range(6)
    ]
    (root / "captions").mkdir(parents=True)
    (root / "captions" / "cap.rc2.val.json").write_text(json.dumps(caps))


def test_fashioniq_and_cirr_layouts_are_read(tmp_path):
    write_fashioniq(tmp_path / "fiq")
    write_cirr(tmp_path / "cirr")
    fiq = composed_data.read_composed("fashioniq", tmp_path / "fiq", "val", 8)
    assert fiq.gallery.shape == (12, 8, 8, 3) and len(fiq.modifications) == 10
    assert fiq.modifications[0] == "is red and has a blue collar"
    np.testing.assert_array_equal(fiq.target_ids[:5], fiq.reference_ids[:5] + 1)
    cirr = composed_data.read_composed("cirr", tmp_path / "cirr", "val", 8)
    assert cirr.gallery.shape == (7, 8, 8, 3) and cirr.modifications == ["a red one"] * 6
    np.testing.assert_array_equal(cirr.target_ids, (cirr.reference_ids + 3) % 7)
    with pytest.raises(FileNotFoundError, match="split.rc2.train.json"):
        composed_data.read_composed("cirr", tmp_path / "cirr", "train", 8)
    (tmp_path / "fiq" / "images" / "dress3.png").unlink()
    with pytest.raises(FileNotFoundError, match="dress3.png"):
        composed_data.read_composed("fashioniq", tmp_path / "fiq", "val", 8)


def write_tiny_hf_clip(directory: pathlib.Path) -> None:
    """A random 16 px CLIP in Hugging Face layout (config.json, model.safetensors) with a
    word-level tokenizer.json, written without torch."""
    from safetensors.numpy import save_file
    from toy import tiny_text_config, tiny_vision_config, write_word_level_tokenizer

    from experiments import training
    from rest_jax.models import ClipConfig, ClipModel, flax_to_hf

    words = ["<|startoftext|>", "<|endoftext|>", "[UNK]", "a", "red", "one", "is", "and"]
    config = ClipConfig(
        vision=tiny_vision_config(image_size=16),
        text=tiny_text_config(
            vocab_size=len(words), max_position_embeddings=12, bos_token_id=0, eos_token_id=1,
            pad_token_id=2,
        ),
        projection_dim=16,
    )  # fmt: skip
    params = training.init_params(ClipModel(config), 0)
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config.to_hf_dict()))
    weights = {k: np.asarray(v, np.float32) for k, v in flax_to_hf(params, config).items()}
    save_file(weights, str(directory / "model.safetensors"))
    write_word_level_tokenizer(directory, words)


def test_real_path_loads_fashioniq_and_cirr_with_a_tiny_clip(tmp_path):
    write_tiny_hf_clip(tmp_path / "clip")
    write_fashioniq(tmp_path / "fiq")
    write_cirr(tmp_path / "cirr")
    write_tiny_combiner(tmp_path / "combiner", dim=16)
    common = dict(task="composed", checkpoint=str(tmp_path / "clip"))
    fiq = composed.load(StudyConfig(dataset="fashioniq", data_dir=str(tmp_path / "fiq"), **common))
    cirr = composed.load(
        StudyConfig(
            dataset="cirr",
            data_dir=str(tmp_path / "cirr"),
            combiner=str(tmp_path / "combiner"),
            **common,
        )
    )
    assert fiq.description["composition"] == "zero-shot"  # auto on real data
    assert fiq.description["source_pairs_from"] == "train" and fiq.galleries["cir"].shape == (
        12,
        16,
    )
    assert cirr.description["composition"] == "combiner" and cirr.galleries["cir"].shape == (7, 16)
    assert cirr.description["source_pairs_from"].startswith("val")
    for data, queries in ((fiq, 10), (cirr, 6)):
        encoder, params, rules = data.query_side("cir")
        inputs = data.query_inputs("cir", "gaussian_noise@5:keyboard@5", 0)
        assert inputs["image"].shape == (queries, 16, 16, 3)  # the checkpoint's size
        assert inputs["text"].shape == (queries, 12) and inputs["text"].dtype == np.int32
        features = np.asarray(jax.jit(encoder)(params, inputs))
        assert features.shape == (queries, 16) and np.isfinite(features).all()
        clean, targets = data.source_pairs["cir"]
        np.testing.assert_allclose(np.linalg.norm(targets, axis=1), 1.0, rtol=1e-5)
    assert "combiner" in cirr.query_side("cir")[1] and "combiner" not in fiq.query_side("cir")[1]
