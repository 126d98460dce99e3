"""The run directory on its own (no study): the lock, results.jsonl's repair and the
configuration comparison (experiments/run_dir.py)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest
from toy import run_dir_held_by_another_process

from experiments.run_dir import (
    ConfigChanged,
    Results,
    RunDir,
    RunDirLocked,
    config_differences,
    split_run_flags,
    study_logging,
)

ROWS = [{"key": f"qs|i2t|m{i}|fog@5", "r1": float(i)} for i in range(3)]


def write_lock(run, pid, host=None):
    run.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": host or socket.gethostname(), "started": "earlier"}
    (run / ".lock").write_text(json.dumps(holder))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_lock_is_exclusive_and_removed_on_exit_even_on_an_error(tmp_path):
    run = tmp_path / "runs" / "x"
    with RunDir(run):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(RunDirLocked) as err, RunDir(run):
            pass
        message = str(err.value)
        assert str(run) in message and f"pid {os.getpid()}" in message
        assert socket.gethostname() in message
    assert not (run / ".lock").exists()
    with pytest.raises(KeyError), RunDir(run):
        raise KeyError("the study failed")
    assert not (run / ".lock").exists()


def test_a_lock_held_by_another_live_process_refuses(tmp_path):
    run = tmp_path / "x"
    with run_dir_held_by_another_process(run) as holder:
        with pytest.raises(RunDirLocked, match=rf"held by pid {holder.pid} on host"), RunDir(run):
            pass
        assert (run / ".lock").exists()  # not taken from its holder


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, capsys):
    run = tmp_path / "x"
    pid = dead_pid()
    write_lock(run, pid)
    with study_logging(), RunDir(run):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"took over the stale lock of pid {pid} on host {socket.gethostname()}" in err
    assert not (run / ".lock").exists()
    assert [p.name for p in run.iterdir()] == []  # no stale copy left behind


def test_a_lock_of_another_host_or_unreadable_is_never_taken_over(tmp_path):
    run = tmp_path / "x"
    write_lock(run, dead_pid(), host="elsewhere")
    with pytest.raises(RunDirLocked, match=r"on host elsewhere.*\(another host\)"), RunDir(run):
        pass
    (run / ".lock").write_text("")
    with pytest.raises(RunDirLocked, match="cannot be read"), RunDir(run):
        pass


def test_a_reused_pid_is_a_stale_lock(tmp_path):
    run = tmp_path / "x"
    run.mkdir()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": "-1"}
    (run / ".lock").write_text(json.dumps(holder))  # our pid, but another start time
    with RunDir(run):
        pass
    assert not (run / ".lock").exists()


def write_rows(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_a_truncated_last_row_is_dropped_with_a_warning(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    partial = json.dumps(ROWS[2])[:25]
    write_rows(path, ROWS[:2], tail=partial)
    with study_logging():
        results = Results(path)
    assert sorted(results.rows) == [ROWS[0]["key"], ROWS[1]["key"]]
    assert ROWS[2]["key"] not in results
    assert path.read_text() == "".join(json.dumps(r) + "\n" for r in ROWS[:2])
    err = capsys.readouterr().err
    assert f"{path}: dropped its last line (line 3" in err and "computed again" in err
    results.add(ROWS[2])  # appending afterwards gives a clean file
    assert [json.loads(line) for line in path.read_text().splitlines()] == ROWS


def test_a_complete_last_row_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]))
    results = Results(path)
    assert sorted(results.rows) == [ROWS[0]["key"], ROWS[1]["key"]]
    results.add(ROWS[2])
    assert [json.loads(line) for line in path.read_text().splitlines()] == ROWS


def test_a_damaged_row_before_the_last_is_an_error_naming_the_file_and_line(tmp_path):
    path = tmp_path / "results.jsonl"
    write_rows(path, ROWS)
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:20]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{path}: line 2 is not a valid row"):
        Results(path)
    assert path.read_text() == "\n".join(lines) + "\n"  # left as it was


def test_config_differences_compare_what_changes_numbers():
    study = {"name": "a", "output_dir": "runs", "seed": 0, "batch_size": 64, "adapt": []}
    methods = {"tcr": {"learning_rate": 3e-4, "steps": 3}}
    old = {"study": study, "methods": methods, "versions": {"jax": "1"}, "command": "x"}
    same = {
        "study": {**study, "name": "b", "output_dir": "elsewhere", "methods": "tcr,rest"},
        "methods": {**methods, "rest": {"learning_rate": 1.0}},  # a new method: new rows only
        "versions": {"jax": "2"},
        "command": "y",
    }
    assert config_differences(old, same) == []
    assert config_differences(old, {"study": {**study, "adapt": ("tcr.steps=1",)}}) == []
    changed = {
        "study": {**study, "seed": 1, "max_queries": 10},
        "methods": {"tcr": {"learning_rate": 1e-3, "steps": 3}},
    }
    assert config_differences(old, changed) == [
        "study.max_queries (absent in config.json, now 10)",
        "study.seed (0 in config.json, now 1)",
        "methods.tcr.learning_rate (0.0003 in config.json, now 0.001)",
    ]
    # Tuples and lists are the same JSON.
    assert (
        config_differences({"study": {"adapt": ["a=1"], "x": [1, 2]}}, {"study": {"x": (1, 2)}})
        == []
    )


def test_rows_of_another_configuration_refuse_until_restart(tmp_path, capsys):
    run = tmp_path / "x"
    old = {"study": {"seed": 0}, "methods": {}, "versions": {"jax": "1"}}
    with RunDir(run) as d:
        d.write_config(old)
        d.results().add(ROWS[0])
    with pytest.raises(ConfigChanged, match=r"study\.seed \(0 in config.json, now 1\)"):
        with RunDir(run) as d:
            d.write_config({"study": {"seed": 1}, "methods": {}})
    assert json.loads((run / "config.json").read_text()) == old  # config.json not rewritten
    with study_logging(), RunDir(run, restart=True) as d:
        d.write_config({"study": {"seed": 1}, "methods": {}})
        assert d.results().rows == {}
    (aside,) = run.glob("replaced-*")
    assert json.loads((aside / "config.json").read_text()) == old
    assert (aside / "results.jsonl").exists()
    assert "--restart: moved the previous results" in capsys.readouterr().err


def test_resuming_under_other_versions_is_a_warning_recorded_in_config_json(tmp_path, capsys):
    run = tmp_path / "x"
    with RunDir(run) as d:
        d.write_config({"study": {}, "versions": {"jax": "1"}, "device": "cpu"})
        d.results().add(ROWS[0])
    with study_logging(), RunDir(run) as d:
        d.write_config({"study": {}, "versions": {"jax": "2"}, "device": "cpu"})
    written = json.loads((run / "config.json").read_text())
    assert written["versions"] == {"jax": "2"}
    assert written["earlier_environments"] == [
        {"versions": {"jax": "1"}, "device": "cpu", "device_count": None}
    ]
    assert "resuming under another environment (versions" in capsys.readouterr().err


def test_unreadable_config_json_with_rows_refuses(tmp_path):
    run = tmp_path / "x"
    run.mkdir()
    write_rows(run / "results.jsonl", ROWS[:1])
    (run / "config.json").write_text('{"study": {"se')
    with pytest.raises(ConfigChanged, match="config.json cannot be read"), RunDir(run) as d:
        d.check_config({"study": {"seed": 0}})


def test_restart_flag_is_taken_out_of_the_command_line():
    assert split_run_flags(["--name", "a", "--restart", "--seed", "1"]) == (
        ["--name", "a", "--seed", "1"],
        True,
    )
    assert split_run_flags(["--name", "a"]) == (["--name", "a"], False)


def test_study_logging_shows_info_and_restores_the_logger(capsys):
    import orbax.checkpoint  # noqa: F401  (attaches absl's handler to the root logger)

    assert logging.getLogger().handlers  # what made logging.basicConfig(INFO) a no-op
    logger = logging.getLogger("rest_jax")
    before = logger.level, logger.propagate, list(logger.handlers)
    with study_logging():
        logging.getLogger("rest_jax.study").info("%d runs planned, %d already done", 3, 1)
    logging.getLogger("rest_jax.study").info("not shown after the study")
    err = capsys.readouterr().err
    assert "3 runs planned, 1 already done\n" in err and "not shown" not in err
    assert err.count("runs planned") == 1  # not printed again through the root's handler
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
