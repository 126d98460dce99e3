"""The study runner on a crash, a rerun, a changed configuration, concurrent runs and bad
flags (experiments/main.py with experiments/run_dir.py, validate.py and data.py)."""

from __future__ import annotations

import pytest

from experiments import data as study_data
from experiments import main as main_job
from experiments.config import StudyConfig

TINY = [
    "--source-steps", "2", "--source-width", "16", "--source-layers", "1",
    "--world-train-images", "64", "--max-queries", "16", "--image-size", "16",
    "--directions", "i2t", "--methods", "source,tent", "--image-shifts", "gaussian_noise@5",
    "--severity-sweep", "", "--diverse", "", "--no-ablations", "--batch-size", "8",
]  # fmt: skip
KEYS = ["clean|i2t|source|clean", "qs|i2t|source|gaussian_noise@5", "qs|i2t|tent|gaussian_noise@5"]


def no_data(monkeypatch):
    def refuse(cfg):
        raise AssertionError("data was prepared")

    monkeypatch.setattr(main_job, "load_study_data", refuse)


# ------------------------------------------------------------------------------ item 9


@pytest.mark.parametrize(
    "flags, lines",
    [
        (["--methods", "source,tnet"], ["--methods: unknown method 'tnet'"]),
        (
            ["--image-shifts", "fgo@5,gaussian_noise@2.5,keyboard@2"],
            [
                "--image-shifts: fgo@5: unknown image corruption 'fgo'",
                "--image-shifts: gaussian_noise@2.5: the severity of an image corruption is an "
                "integer 1-5",
                "--image-shifts: keyboard@2: unknown image corruption 'keyboard' (a text "
                "corruption: it goes in --text-shifts)",
            ],
        ),
        (
            ["--text-shifts", "keyboard@9,synonym_replacement@1,typo@1"],
            [
                "--text-shifts: keyboard@9: the level of a character corruption is an integer 1-7",
                "--text-shifts: synonym_replacement@1: the level of a word corruption is a rate",
                "--text-shifts: typo@1: unknown text corruption 'typo'",
            ],
        ),
        (["--directions", "i2t,it2"], ["--directions: unknown direction 'it2'"]),
        (["--severity-sweep", "fog,snowy"], ["--severity-sweep: unknown image corruption 'snowy'"]),
        (["--diverse", "mixd"], ["--diverse: unknown diverse stream 'mixd'"]),
        (
            ["--adapt", "tent.lerning_rate=1", "--adapt", "tnet.steps=2"],
            [
                "--adapt tent.lerning_rate=1: 'lerning_rate' is not an AdaptConfig field",
                "--adapt tnet.steps=2: unknown method 'tnet'",
            ],
        ),
        (
            ["--adapt", "steps=0"],
            ["--adapt: an invalid configuration of rest, source, tcr, tent: steps must be >= 1"],
        ),
        (
            ["--dataset", "coco", "--data-dir", "/no/such/dir"],
            [
                "--data-dir: /no/such/dir does not exist or is not a directory",
                "--checkpoint: --dataset coco needs a CLIP checkpoint directory",
            ],
        ),
        (["--batch-size", "0"], ["--batch-size: must be >= 1, got 0"]),
    ],
)
def test_bad_flags_fail_before_any_data_is_prepared(tmp_path, monkeypatch, flags, lines):
    no_data(monkeypatch)
    with pytest.raises(ValueError) as err:
        main_job.main(["--output-dir", str(tmp_path / "runs"), *TINY, *flags])
    message = str(err.value)
    assert message.startswith(f"invalid study flags ({len(lines)}):")
    for line in lines:
        assert f"\n  {line}" in message, line
    assert not (tmp_path / "runs").exists()


def test_the_default_flags_are_valid():
    from experiments.validate import study_config_problems

    assert study_config_problems(StudyConfig()) == []
    assert study_config_problems(StudyConfig(image_shifts="all", text_shifts="all")) == []


# ------------------------------------------------------------------------------ item 1


def test_another_data_dir_is_not_served_the_first_ones_prepared_data(tmp_path):
    from test_main_job import write_karpathy_fixture, write_tiny_clip

    write_tiny_clip(tmp_path / "clip")
    write_karpathy_fixture(tmp_path / "a", n_test=6)
    write_karpathy_fixture(tmp_path / "b", n_test=4)

    def load(data_dir):
        cfg = StudyConfig(
            dataset="coco",
            data_dir=str(data_dir),
            checkpoint=str(tmp_path / "clip"),
            cache_dir=str(tmp_path / "cache"),
        )
        return study_data.load_study_data(cfg)

    first, second = load(tmp_path / "a"), load(tmp_path / "b")
    assert first.description["images"] == 6 and second.description["images"] == 4
    assert first.description["prepared"] != second.description["prepared"]
    source = second.description["data_source"]
    assert source["data_dir"] == str((tmp_path / "b").resolve())
    # An edited split file under the same directory is prepared again too.
    write_karpathy_fixture(tmp_path / "a", n_test=5)
    assert load(tmp_path / "a").description["images"] == 5
    with pytest.raises(FileNotFoundError, match=f"--data-dir {tmp_path / 'missing'}: no such"):
        load(tmp_path / "missing")
