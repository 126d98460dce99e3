"""The README's Python: every ``rest_jax`` name it uses is public, and its code blocks run."""

from __future__ import annotations

import ast
import contextlib
import io
import pathlib
import re

import pytest

import rest_jax

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def fenced_blocks(text: str, language: str = "python") -> list[str]:
    """The contents of the fenced ```language blocks of ``text``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def rest_jax_names(block: str) -> set[tuple[str, ...]]:
    """Every dotted name under ``rest_jax`` a block uses (``rest_jax.X.Y``, ``from rest_jax
    import X``), as attribute chains."""
    names = set()
    for node in ast.walk(ast.parse(block)):
        chain = []
        while isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        if chain and isinstance(node, ast.Name) and node.id == "rest_jax":
            names.add(tuple(reversed(chain)))
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "rest_jax":
            module = tuple(node.module.split(".")[1:])
            names.update(module + (alias.name,) for alias in node.names)
    return names


def prose_names(text: str) -> set[tuple[str, ...]]:
    """``rest_jax.X.Y`` written in the README's prose (file paths use ``/``, not ``.``)."""
    return {
        tuple(match.rstrip(".").split("."))
        for match in re.findall(r"\brest_jax\.([A-Za-z_][\w.]*)", text)
    }


def test_readme_has_python_blocks():
    blocks = fenced_blocks(README.read_text())
    assert len(blocks) >= 3
    assert all(rest_jax_names(block) for block in blocks)


def test_every_name_the_readme_uses_is_public():
    text = README.read_text()
    names = set().union(*map(rest_jax_names, fenced_blocks(text))) | prose_names(text)
    assert ("gallery_mesh",) in names and ("Adapter", "create") in names
    for chain in sorted(names):
        assert chain[0] in rest_jax.__all__, f"rest_jax.{chain[0]} is not in rest_jax.__all__"
        obj = rest_jax
        for i, attr in enumerate(chain):
            assert hasattr(obj, attr), f"rest_jax.{'.'.join(chain[: i + 1])} does not exist"
            obj = getattr(obj, attr)


def test_all_is_importable():
    for name in rest_jax.__all__:
        assert hasattr(rest_jax, name), name
    assert rest_jax.gallery_mesh is rest_jax.retrieval.gallery_mesh


def test_python_blocks_run_in_order(tmp_path, monkeypatch):
    """The blocks run as written, one after another in one namespace (as a user pasting them
    into a session would); each must print or define what it promises."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    printed = []
    for index, block in enumerate(fenced_blocks(README.read_text())):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(block, f"README.md python block {index}", "exec"), namespace)
            except Exception as error:  # name the block in the failure
                pytest.fail(f"README python block {index} failed: {error!r}\n{block}")
        for line in out.getvalue().splitlines():
            if line.startswith("{'r1'"):  # printed metrics are percentages
                printed.append(ast.literal_eval(line))
    assert len(printed) == 2
    for metrics in printed:
        assert set(metrics) == {"r1", "r5", "r10", "map"}
        assert all(0 <= v <= 100 for v in metrics.values())
    assert isinstance(namespace["adapted_model"], namespace["NnxEncoder"])


def section_command(text: str, heading: str) -> str:
    """The single command line of the fenced ```bash block under ``## heading``."""
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = fenced_blocks(section, "bash")
    assert len(blocks) == 1 and blocks[0].count("\n") == 1, f"## {heading}: one bash line"
    return blocks[0].strip()


def test_ci_runs_exactly_the_readmes_tests_command():
    ci = (README.parent / ".ci" / "run").read_text().rstrip("\n").splitlines()[-1]
    text = README.read_text()
    assert section_command(text, "Tests") == ci
    quickstart = section_command(text, "Quickstart")
    assert quickstart.startswith("python3 -m venv .venv") and "experiments.main" in quickstart
