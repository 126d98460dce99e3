"""The study runner on a crash, a rerun, a changed configuration, concurrent runs and bad
flags (experiments/main.py with experiments/run_dir.py, validate.py and data.py)."""

from __future__ import annotations

import pytest

from experiments import data as study_data
from experiments.config import StudyConfig

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
