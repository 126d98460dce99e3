"""The study's command line: every flag explained with its default, grouped; bad values refused."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import subprocess
import sys

import pytest

from experiments import config as study_config
from experiments.config import (
    FLAG_HELP,
    GROUPS,
    PROG,
    StudyConfig,
    build_parser,
    check_config,
    parse_args,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIELDS = [field.name for field in dataclasses.fields(StudyConfig)]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_every_field_has_help_and_a_group():
    missing = [name for name in FIELDS if name not in FLAG_HELP]
    assert not missing, f"add help for {missing} to FLAG_HELP in experiments/config.py"
    assert sorted(FLAG_HELP) == sorted(FIELDS), "FLAG_HELP names a field StudyConfig lacks"
    for name, (group, text) in FLAG_HELP.items():
        assert group in GROUPS, (name, group)
        assert len(text.split()) >= 3, (name, text)
    assert {group for group, _ in FLAG_HELP.values()} == set(GROUPS)
    assert list(GROUPS) == ["data and model", "grid", "adaptation overrides", "output"]
    for description in GROUPS.values():
        assert "e.g. --" in description


def option_entries(help_text: str) -> dict[str, str]:
    """``--flag`` -> its whole entry (flag line and help), whitespace collapsed."""
    options = help_text[help_text.index("options:") : help_text.index("examples:")]
    entries = {}
    for chunk in re.split(r"\n(?=  --)", options):
        chunk = " ".join(chunk.split())
        if chunk.startswith("--"):
            entries[chunk.split()[0].rstrip(",")] = chunk
    return entries


def test_help_explains_every_flag_with_its_default():
    """``python -m experiments.main --help`` itself, as a user runs it."""
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "experiments.main", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    text = run.stdout
    assert text.startswith(f"usage: {PROG} ")
    for title in GROUPS:
        assert f"\n{title}:\n" in text
    entries = option_entries(text)
    defaults = StudyConfig()
    for name in FIELDS:
        entry = entries[flag(name)]
        shown = study_config._shown(getattr(defaults, name))
        assert f"(default: {shown})" in entry, entry
        assert " ".join(FLAG_HELP[name][1].split()) in entry
    assert entries["--ablations"].startswith("--ablations, --no-ablations")
    assert "(default: on)" in entries["--ablations"]
    assert "(default: 64)" in entries["--batch-size"]
    assert "(default: synthworld)" in entries["--dataset"]
    assert "{synthworld,coco,flickr,fashioniq,cirr,ks50,vggsound}" in entries["--dataset"]
    assert "(default: none)" in entries["--adapt"]
    # Each group lists its own flags, in dataclass order.
    for title in GROUPS:
        section = text[text.index(f"\n{title}:\n") :].split("\n\n")[1]
        listed = re.findall(r"^  (--[\w-]+)", section, flags=re.MULTILINE)
        assert listed == [flag(n) for n in FIELDS if FLAG_HELP[n][0] == title]


def test_defaults_and_values_parse(tmp_path):
    assert parse_args([]) == StudyConfig()
    got = parse_args(
        [
            "--batch-size", "16", "--no-ablations", "--adapt", "steps=2",
            "--adapt", "rest.num_candidates=8", "--shifts", "i2t=all", "--order", "seeded",
            "--severity-sweep", "", "--diverse", "",
        ]
    )  # fmt: skip
    assert got.batch_size == 16 and got.ablations is False and got.order == "seeded"
    assert got.adapt == ("steps=2", "rest.num_candidates=8")
    assert got.severity_sweep == "" and got.diverse == ""
    real = parse_args(["--dataset", "coco", "--data-dir", str(tmp_path), "--checkpoint", "c"])
    assert real.dataset == "coco"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "x"], "argument --batch-size: invalid int value: 'x'"),
        (["--seed", "1.5"], "argument --seed: invalid int value"),
        (["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
        (["--order", "random"], "argument --order: invalid choice"),
        (["--split", "train"], "argument --split: invalid choice"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
        (["--max-queries", "-1"], "--max-queries: must be >= 0"),
        (["--methods", "source,tnet"], "--methods: unknown method 'tnet'"),
        (["--severity-methods", "rset"], "--severity-methods: unknown method 'rset'"),
        (["--directions", "i2t,x2y"], "--directions: unknown direction 'x2y'"),
        (["--diverse", "mixd"], "--diverse: unknown diverse stream 'mixd'"),
        (["--severity-sweep", "fgo"], "--severity-sweep: fgo: .*unknown image corruption 'fgo'"),
        (["--shifts", "i2t=gausian_noise@5"], "--shifts i2t: .*unknown image corruption"),
        (["--shifts", "i2t=fog"], "--shifts i2t: fog: the severity .* is an integer 1-5"),
        (["--shifts", "t2i=fog@3"], "--shifts t2i: fog@3: unknown text corruption 'fog'"),
        (["--shifts", "x2y=fog@3"], "--shifts x2y: unknown direction 'x2y' of task image-text"),
        (["--shifts", "i2t"], "--shifts expects DIRECTION=SPEC,SPEC, got 'i2t'"),
        (["--shifts", "i2t=fog@1+fog@2"], "--shifts i2t: 'fog@1\\+fog@2': a shift is a non-empty"),
        (["--task", "audio"], "argument --task: invalid choice: 'audio'"),
        (["--adapt", "learnig_rate=1e-3"], "'learnig_rate' is not an AdaptConfig field"),
        (["--adapt", "steps=0"], "--adapt: an invalid configuration .*steps must be >= 1"),
        (["--adapt", "steps"], "--adapt steps: expected KEY=VALUE"),
        (["--dataset", "flickr"], "--data-dir: --dataset flickr needs the directory"),
    ],
)
def test_bad_values_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"usage: {PROG}")
    assert re.search(message, error), error


def test_bad_values_stop_the_study_before_any_work(tmp_path):
    from experiments import main as main_job

    with pytest.raises(SystemExit):
        main_job.main(["--output-dir", str(tmp_path / "runs"), "--batch-size", "x"])
    with pytest.raises(SystemExit):
        main_job.main(["--output-dir", str(tmp_path / "runs"), "--methods", "tnet"])
    assert not (tmp_path / "runs").exists()


def test_check_config_takes_a_config_built_in_code():
    check_config(StudyConfig())
    with pytest.raises(ValueError, match="--directions"):
        check_config(dataclasses.replace(StudyConfig(), directions="i2t,both"))


def test_parser_flags_are_the_fields():
    parser = build_parser()
    flags = [a.option_strings[0] for a in parser._actions if a.option_strings[0] != "-h"]
    assert flags == [flag(name) for name in FIELDS]
