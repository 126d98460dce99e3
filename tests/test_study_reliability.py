"""The study runner on a crash, a rerun, a changed configuration, concurrent runs and bad
flags (experiments/main.py with experiments/run_dir.py, validate.py and data.py)."""

from __future__ import annotations

import json
import pathlib
import shutil
import socket
import tempfile

import pytest
from toy import run_dir_held_by_another_process

from experiments import data as study_data
from experiments import main as main_job
from experiments.config import StudyConfig
from experiments.run_dir import ConfigChanged, RunDirLocked

SOURCE = pathlib.Path(tempfile.mkdtemp(prefix="tiny_world_source_"))
TINY = [
    "--source-model", str(SOURCE), "--max-queries", "16", "--stream-seeds", "0", "--no-oracle",
    "--directions", "i2t", "--methods", "source,tent", "--shifts", "i2t=gaussian_noise@5",
    "--severity-sweep", "", "--diverse", "", "--no-ablations", "--batch-size", "8",
    "--no-reference-cosine",
]  # fmt: skip
KEYS = [
    "clean|i2t|source|clean|seed=0",
    "qs|i2t|source|gaussian_noise@5|seed=0",
    "qs|i2t|tent|gaussian_noise@5|seed=0",
]


@pytest.fixture(scope="module", autouse=True)
def tiny_source():
    """The random tiny source model that TINY's ``--source-model`` names."""
    from toy import write_tiny_world_source

    write_tiny_world_source(SOURCE, n_eval=16)
    yield SOURCE
    shutil.rmtree(SOURCE, ignore_errors=True)


def read_rows(out: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # source model and XLA cache, shared


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache):
    """A finished tiny study: (its run directory, its rows)."""
    out = tmp_path_factory.mktemp("finished")
    run = main_job.main(["--name", "s", "--output-dir", str(out), "--cache-dir", str(cache), *TINY])
    rows = read_rows(run)
    assert [r["key"] for r in rows] == KEYS
    assert not (run / ".lock").exists()
    return run, rows


def copy_of(finished, tmp_path) -> tuple[list[str], pathlib.Path]:
    """A copy of the finished run under tmp_path, and the arguments that rerun it."""
    run, _ = finished
    shutil.copytree(run, tmp_path / "runs" / "s")
    args = ["--name", "s", "--output-dir", str(tmp_path / "runs"), *TINY]
    return args, tmp_path / "runs" / "s"


def no_data(monkeypatch):
    def refuse(cfg):
        raise AssertionError("data was prepared")

    monkeypatch.setattr(study_data, "load_study_data", refuse)


# ------------------------------------------------------------------------------ item 2


def test_rerun_with_another_configuration_refuses_naming_the_fields(
    finished, tmp_path, cache, monkeypatch
):
    args, run = copy_of(finished, tmp_path)
    args += ["--cache-dir", str(cache)]
    config_before = (run / "config.json").read_text()
    rows_before = (run / "results.jsonl").read_text()
    with monkeypatch.context() as m:
        no_data(m)  # refused before any data is prepared
        with pytest.raises(ConfigChanged) as err:
            main_job.main([*args, "--seed", "1", "--batch-size", "4"])
    message = str(err.value)
    assert str(run) in message and "--restart" in message
    assert "study.seed (0 in config.json, now 1)" in message
    assert "study.batch_size (8 in config.json, now 4)" in message
    with pytest.raises(ConfigChanged, match=r"methods\.tent\.learning_rate \(0\.003 "):
        main_job.main([*args, "--adapt", "tent.learning_rate=0.01"])
    assert (run / "config.json").read_text() == config_before  # nothing rewritten
    assert (run / "results.jsonl").read_text() == rows_before
    assert not (run / ".lock").exists()
    # --restart starts over: every row recomputed under the configuration config.json states.
    main_job.main([*args, "--seed", "1", "--restart"])
    assert json.loads((run / "config.json").read_text())["study"]["seed"] == 1
    rows = read_rows(run)
    assert [r["key"] for r in rows] == KEYS
    (aside,) = run.glob("replaced-*")
    assert (aside / "results.jsonl").read_text() == rows_before
    assert json.loads((aside / "config.json").read_text())["study"]["seed"] == 0


def test_a_rerun_may_add_rows_to_a_finished_study(finished, tmp_path, cache):
    # Row selection (here: one more method) does not change the numbers of existing rows.
    args, run = copy_of(finished, tmp_path)
    _, rows = finished
    out = main_job.main([*args, "--cache-dir", str(cache), "--methods", "source,tent,tcr"])
    new_rows = read_rows(out)
    assert new_rows[: len(rows)] == rows
    assert [r["key"] for r in new_rows[len(rows) :]] == ["qs|i2t|tcr|gaussian_noise@5|seed=0"]


# ------------------------------------------------------------------------------ items 4, 5


def test_a_truncated_last_row_is_recomputed_and_the_study_logs_show(
    finished, tmp_path, cache, capsys
):
    args, run = copy_of(finished, tmp_path)
    _, rows = finished
    lines = (run / "results.jsonl").read_text().splitlines()
    (run / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:30])
    capsys.readouterr()
    out = main_job.main([*args, "--cache-dir", str(cache)])
    err = capsys.readouterr().err
    assert f"{run / 'results.jsonl'}: dropped its last line (line 3" in err
    assert without_timing(read_rows(out)) == without_timing(rows)
    # Item 4: the study's INFO logs are shown (importing rest_jax left a root handler).
    assert "3 runs planned, 2 already done" in err
    assert "adapted parameters:" in err and "adapted: 8 tensors, 256 scalars" in err


def test_a_damaged_row_before_the_last_is_an_error_naming_file_and_line(finished, tmp_path, cache):
    args, run = copy_of(finished, tmp_path)
    lines = (run / "results.jsonl").read_text().splitlines()
    lines[0] = lines[0][:-10]
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{run / 'results.jsonl'}: line 1 is not a valid row"):
        main_job.main([*args, "--cache-dir", str(cache)])


# ------------------------------------------------------------------------------ item 8


def test_a_second_study_with_the_same_name_refuses(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "s"
    with run_dir_held_by_another_process(run) as holder:
        no_data(monkeypatch)
        with pytest.raises(RunDirLocked) as err:
            main_job.main(["--name", "s", "--output-dir", str(tmp_path / "runs"), *TINY])
        message = str(err.value)
        assert f"another study is running in {run}" in message
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert not (run / "results.jsonl").exists() and not (run / "config.json").exists()


# ------------------------------------------------------------------------------ item 9


@pytest.mark.parametrize(
    "flags, lines",
    [
        (["--methods", "source,tnet"], ["--methods: unknown method 'tnet'"]),
        (
            ["--shifts", "i2t=fgo@5,gaussian_noise@2.5,keyboard@2"],
            [
                "--shifts i2t: fgo@5: unknown image corruption 'fgo'",
                "--shifts i2t: gaussian_noise@2.5: the severity of an image corruption is an "
                "integer 1-5",
                "--shifts i2t: keyboard@2: unknown image corruption 'keyboard' (a text "
                "corruption: it shifts t2i queries)",
            ],
        ),
        (
            ["--shifts", "t2i=keyboard@9,synonym_replacement@1,typo@1"],
            [
                "--shifts t2i: keyboard@9: the level of a character corruption is an integer 1-7",
                "--shifts t2i: synonym_replacement@1: the level of a word corruption is a rate",
                "--shifts t2i: typo@1: unknown text corruption 'typo'",
            ],
        ),
        (["--directions", "i2t,it2"], ["--directions: unknown direction 'it2'"]),
        (
            ["--severity-sweep", "fog,snowy"],
            ["--severity-sweep: snowy: snowy@1: unknown image corruption 'snowy'"],
        ),
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
def test_bad_flags_fail_before_any_data_is_prepared(tmp_path, monkeypatch, capsys, flags, lines):
    no_data(monkeypatch)
    with pytest.raises(SystemExit):  # a usage error of the parser (exit status 2)
        main_job.main(["--output-dir", str(tmp_path / "runs"), *TINY, *flags])
    message = capsys.readouterr().err
    assert f"error: invalid study flags ({len(lines)}):" in message
    for line in lines:
        assert f"\n  {line}" in message, line
    assert not (tmp_path / "runs").exists()


def test_the_default_flags_are_valid():
    from experiments.validate import study_config_problems

    assert study_config_problems(StudyConfig()) == []
    assert study_config_problems(StudyConfig(shifts=("i2t=all", "t2i=all"))) == []


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
