"""The main job end to end: SynthWorld with every method, and the real path on fixtures."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from experiments import main as main_job
from experiments.config import ALL_METHODS, parse_args
from rest_jax import preset
from rest_jax.models import contrastive_temperature
from rest_jax.pretrained import load_world_source


def read_rows(out: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


# The pipeline's own paths, one method each: source (never changes), tent (the logged
# reference cosine), tcr and rest (the anchor bank, decoupling). Every method's step runs in
# tests/test_baselines.py; every method's study config is checked below without compiling.
PIPELINE_METHODS = "source,tent,tcr,rest"


def test_every_method_has_a_study_config_of_its_own():
    cfg = parse_args(["--methods", ALL_METHODS, "--adapt", "rest.num_candidates=2"])
    assert cfg.resolved_hyperparameters() == "synthworld"
    for method in cfg.method_list():
        expected = preset(method, "synthworld")
        if method in main_job.LOGGED_REFERENCE_COSINE:
            expected = expected.replace(record_reference_cosine=True)
        if method == "rest":
            expected = expected.replace(num_candidates=2)
        assert main_job.adapt_config(cfg, method) == expected, method
    quiet = parse_args(["--no-reference-cosine"])
    methods = ALL_METHODS.split(",")
    assert not any(main_job.adapt_config(quiet, m).record_reference_cosine for m in methods)


def test_synthworld_pipeline_end_to_end(tmp_path):
    from toy import write_tiny_world_source

    write_tiny_world_source(tmp_path / "source")
    args = [
        "--name", "smoke", "--output-dir", str(tmp_path / "runs"),
        "--cache-dir", str(tmp_path / "cache"), "--source-model", str(tmp_path / "source"),
        "--directions", "i2t", "--methods", PIPELINE_METHODS, "--shifts", "i2t=gaussian_noise@5",
        "--stream-seeds", "0,1", "--severity-sweep", "", "--diverse", "", "--no-ablations",
        "--batch-size", "16", "--max-queries", "32",
    ]  # fmt: skip
    out = main_job.main(args)
    rows = read_rows(out)
    methods = PIPELINE_METHODS.split(",")
    assert sorted(r["method"] for r in rows if r["group"] == "qs") == sorted(methods * 2)
    assert [r["method"] for r in rows if r["group"] == "clean"] == ["source"] * 2
    assert {r["seed"] for r in rows} == {0, 1}
    for r in rows:
        assert 0.0 <= r["r1"] <= r["r5"] <= r["r10"] <= 100.0
        assert r.get("rolled_back", 0) == 0
    source = {r["group"]: r for r in rows if r["method"] == "source"}
    assert source["qs"]["forgetting_r1"] == 0.0  # the source model never changes
    oracle = [r for r in rows if r["group"] == "oracle"]
    assert len(oracle) == 2 and all(r["uses_labels"] and "source_r1" in r for r in oracle)
    # the oracle trains at the source model's own temperature (1 / exp(logit_scale))
    scale = load_world_source(tmp_path / "source").params["logit_scale"]
    recorded = json.loads((out / "config.json").read_text())["oracle"]["temperature"]
    assert recorded == pytest.approx(float(contrastive_temperature(scale)))
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["i2t"]) == set(methods) | {"oracle"}
    for entry in summary["i2t"].values():
        assert entry["seeds"] == 2 and entry["mean_shifted_r1_std"] >= 0
        assert entry["clean_r1"] == source["clean"]["r1"]
    table = (out / "table.md").read_text()
    assert all(f"| {m} |" in table for m in methods) and "±" in table
    assert (out / "plots" / "r1_by_shift_i2t.png").stat().st_size > 1000
    assert (out / "plots" / "reference_cosine.png").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["versions"]["jax"] and config["seed"] == 0 and config["device"]
    assert config["stream_seeds"] == [0, 1] and config["hyperparameters"] == "synthworld"
    assert set(config["methods"]) == set(methods)
    assert config["data"]["source_model"]["sha256"]["model.safetensors"]
    # resume: a second call runs nothing new and leaves the rows as they were
    again = main_job.main(args)
    assert read_rows(again) == rows


def write_karpathy_fixture(root: pathlib.Path, n_test: int = 6, n_val: int = 3) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = ["red", "green", "blue", "yellow", "black", "white", "pink", "grey", "brown"]
    entries = []
    for i in range(n_test + n_val):
        folder = root / "images" / "val2014"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"img_{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(folder / name)
        sentences = [{"raw": f"A {colours[i]} photo number {j}."} for j in range(5)]
        entries.append(
            {
                "filename": name,
                "filepath": "val2014",
                "imgid": i,
                "split": "test" if i < n_test else "val",
                "sentences": sentences,
            }
        )
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries}))


def write_tiny_clip(directory: pathlib.Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from toy import tiny_text_config, tiny_vision_config, write_word_level_tokenizer

    from rest_jax.models import ClipConfig

    words = ["<|startoftext|>", "<|endoftext|>", "[UNK]"]
    words += "a red green blue yellow black white pink grey brown photo number".split()
    words += [str(j) for j in range(5)]
    config = ClipConfig(
        vision=tiny_vision_config(),
        text=tiny_text_config(
            vocab_size=len(words),
            max_position_embeddings=12,
            hidden_size=32,
            intermediate_size=64,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=2,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(transformers.CLIPConfig(**config.to_hf_dict()))
    model.save_pretrained(directory)
    write_word_level_tokenizer(directory, words)


def test_real_path_on_tiny_clip_and_coco_fixture(tmp_path):
    write_tiny_clip(tmp_path / "clip")
    write_karpathy_fixture(tmp_path / "coco")
    args = [
        "--name", "real", "--output-dir", str(tmp_path / "runs"),
        "--cache-dir", str(tmp_path / "cache"), "--dataset", "coco",
        "--data-dir", str(tmp_path / "coco"), "--checkpoint", str(tmp_path / "clip"),
        "--methods", "source,rest", "--shifts", "i2t=gaussian_noise@5",
        "--shifts", "t2i=keyboard@5", "--severity-sweep", "", "--diverse", "mixed",
        "--diverse-directions", "t2i", "--diverse-methods", "source,rest", "--no-ablations",
        "--batch-size", "4", "--adapt", "rest.num_candidates=2", "--stream-seeds", "0",
    ]  # fmt: skip
    out = main_job.main(args)
    rows = read_rows(out)
    assert {(r["direction"], r["method"]) for r in rows} == {
        (d, m) for d in ("i2t", "t2i") for m in ("source", "rest", "oracle")
    }
    mixed = [r for r in rows if r["group"] == "mixed"]
    assert len(mixed) == 2 and all("forgetting_r1" in r for r in mixed)
    assert {r["direction"] for r in mixed} == {"t2i"}
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["dataset"] == "coco" and config["data"]["images"] == 6
    assert config["hyperparameters"] == "paper"  # real checkpoints keep the published values
    assert config["methods"]["rest"]["num_candidates"] == 2
    assert "| rest |" in (out / "table.md").read_text()
