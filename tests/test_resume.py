"""Crash-safe resume: a run killed mid-stream and resumed from its last checkpoint equals an
uninterrupted run, bit for bit (CPU): score rows, ids, metrics, counters and final state."""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest
from toy import toy_apply, toy_problem

from rest_jax import Adapter, pad_batch, preset, run_stream
from rest_jax.checkpoint import StreamCheckpointer, restore_state, save_state

LN_ONLY = [(r"^ln/", True)]
B = 8
NUM_BATCHES = 14


class Killed(RuntimeError):
    pass


@pytest.fixture(scope="module")
def setup():
    params, gallery, queries, clean = toy_problem(seed=3, n_gallery=24, n_queries=B * 13 + 5)
    config = preset("rest", num_candidates=2, collapse_guard=True, bank_batches=6)
    adapter = Adapter.create(
        toy_apply, params, gallery, config=config, rules=LN_ONLY, source=(clean, gallery), seed=7
    )
    queries = np.asarray(queries).copy()
    queries[B * 4 + 2] = np.nan  # a masked row: the counters are not all zero
    return adapter, queries


def stream(queries, kill_at=None):
    """The same deterministic stream every time; raises ``Killed`` at batch ``kill_at``."""
    for index, start in enumerate(range(0, len(queries), B)):
        if index == kill_at:
            raise Killed(f"killed at batch {index}")
        batch = pad_batch(queries[start : start + B], B)
        batch["ids"] = np.arange(start, start + B)
        yield batch


def assert_same(a, b):
    for name in ("query_ids", "scores", "top_ids", "top_scores", "answered", "rolled_back"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
    for group in ("metrics", "batch_metrics"):
        x, y = getattr(a, group), getattr(b, group)
        assert sorted(x) == sorted(y)
        for k in x:
            assert np.array_equal(x[k], y[k], equal_nan=True), f"{group}/{k}"
    leaves_a, tree_a = jax.tree.flatten(a.final_state)
    leaves_b, tree_b = jax.tree.flatten(b.final_state)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("keep", ["scores", "top_k"])
def test_kill_and_resume_is_bit_identical(setup, tmp_path, keep):
    adapter, queries = setup
    uninterrupted = run_stream(adapter, stream(queries), keep=keep, top_k=5)
    assert len(uninterrupted.rolled_back) == NUM_BATCHES
    assert int(uninterrupted.final_state.num_nonfinite_rows) == 1

    run = lambda kill_at=None: run_stream(
        adapter,
        stream(queries, kill_at),
        keep=keep,
        top_k=5,
        checkpoint_dir=tmp_path,
        checkpoint_every=3,
    )
    with pytest.raises(Killed, match="batch 7"):
        run(kill_at=7)  # checkpoints after 3 and 6 batches
    assert StreamCheckpointer(tmp_path).latest() == 6
    with pytest.raises(Killed, match="batch 13"):
        run(kill_at=13)  # resumes at 6, dies again after the checkpoint at 12
    assert StreamCheckpointer(tmp_path).latest() == 12
    resumed = run()
    assert_same(resumed, uninterrupted)
    assert adapter.step_fn._cache_size() == 1  # a restored state does not recompile the step


def test_finished_run_returns_its_result_without_recomputing(setup, tmp_path):
    adapter, queries = setup
    first = run_stream(adapter, stream(queries), checkpoint_dir=tmp_path, checkpoint_every=5)
    seen = []
    again = run_stream(
        adapter,
        stream(queries),
        checkpoint_dir=tmp_path,
        checkpoint_every=5,
        on_batch=lambda index, _: seen.append(index),
    )
    assert seen == []
    assert_same(again, first)


def test_crash_between_rows_and_state_write_resumes_cleanly(setup, tmp_path, monkeypatch):
    # The row file of an interval is written before its state checkpoint; a crash in
    # between leaves an orphan row file that the resumed run must ignore.
    adapter, queries = setup
    uninterrupted = run_stream(adapter, stream(queries))
    real_save = StreamCheckpointer.save
    calls = []

    def failing_save(self, batches_done, state, loop):
        calls.append(batches_done)
        if len(calls) == 2:
            raise Killed("killed while checkpointing")
        real_save(self, batches_done, state, loop)

    monkeypatch.setattr(StreamCheckpointer, "save", failing_save)
    with pytest.raises(Killed):
        run_stream(adapter, stream(queries), checkpoint_dir=tmp_path, checkpoint_every=4)
    monkeypatch.setattr(StreamCheckpointer, "save", real_save)
    assert StreamCheckpointer(tmp_path).latest() == 4
    assert (tmp_path / "rows" / "rows_0000000004.npz").exists()  # the orphan
    resumed = run_stream(adapter, stream(queries), checkpoint_dir=tmp_path, checkpoint_every=4)
    assert_same(resumed, uninterrupted)


def test_resume_refuses_another_config_keep_or_a_shorter_stream(setup, tmp_path):
    adapter, queries = setup
    with pytest.raises(Killed):
        run_stream(adapter, stream(queries, kill_at=5), checkpoint_dir=tmp_path, checkpoint_every=4)
    other = Adapter.create(
        toy_apply,
        adapter.params(adapter.constants.initial),
        adapter.constants.gallery,
        config=adapter.config.replace(learning_rate=1e-3),
        rules=LN_ONLY,
        source=(adapter.constants.source_inputs, adapter.constants.source_targets),
    )
    with pytest.raises(ValueError, match=r"another config \(fields \['learning_rate'\]\)"):
        run_stream(other, stream(queries), checkpoint_dir=tmp_path)
    with pytest.raises(
        ValueError, match=r"written with keep='scores'; this run asks keep='metrics'"
    ):
        run_stream(adapter, stream(queries), keep="metrics", checkpoint_dir=tmp_path)
    with pytest.raises(
        ValueError, match=r"the stream ended after 2 batches, before the checkpoint"
    ):
        run_stream(adapter, stream(queries[: 2 * B]), checkpoint_dir=tmp_path)


def test_save_and_restore_a_state(setup, tmp_path):
    adapter, queries = setup
    state, _ = adapter.step(adapter.init_state(), pad_batch(queries[:B], B))
    state, _ = adapter.step(state, pad_batch(queries[B : 2 * B], B))
    save_state(tmp_path / "state", state)
    restored = restore_state(tmp_path / "state", adapter.constants.initial)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    assert int(restored.batch_index) == 2


@pytest.mark.parametrize("damage", ["truncated_state", "truncated_loop", "missing_state"])
def test_damaged_newest_checkpoint_falls_back_to_the_older_one(setup, tmp_path, caplog, damage):
    adapter, queries = setup
    uninterrupted = run_stream(adapter, stream(queries))
    run = lambda kill_at=None: run_stream(
        adapter, stream(queries, kill_at), checkpoint_dir=tmp_path, checkpoint_every=3
    )
    with pytest.raises(Killed):
        run(kill_at=7)  # checkpoints after 3 and 6 batches
    newest = tmp_path / "checkpoints" / "6"
    if damage == "truncated_state":
        leaves = newest / "state" / "leaves.npz"
        leaves.write_bytes(leaves.read_bytes()[:100])
    elif damage == "truncated_loop":
        loop = newest / "loop" / "metadata"
        loop.write_text(loop.read_text()[:40])
    else:
        (newest / "state" / "leaves.npz").unlink()
    with caplog.at_level(logging.WARNING, logger="rest_jax"):
        resumed = run()
    assert_same(resumed, uninterrupted)
    assert f"checkpoint {newest} is damaged" in caplog.text
    assert "resuming from the checkpoint after 3 batches" in caplog.text
    set_aside = tmp_path / "damaged" / "6"
    assert set_aside.is_dir() and str(set_aside) in caplog.text
    # The later saves went through (one after 6 batches again, and the final one).
    assert StreamCheckpointer(tmp_path).latest() == NUM_BATCHES


def test_every_checkpoint_damaged_is_an_error_naming_them(setup, tmp_path):
    adapter, queries = setup
    with pytest.raises(Killed):
        run_stream(adapter, stream(queries, 7), checkpoint_dir=tmp_path, checkpoint_every=3)
    for step in (3, 6):
        leaves = tmp_path / "checkpoints" / str(step) / "state" / "leaves.npz"
        leaves.write_bytes(b"")
    with pytest.raises(ValueError) as err:
        run_stream(adapter, stream(queries), checkpoint_dir=tmp_path, checkpoint_every=3)
    message = str(err.value)
    for step in (3, 6):
        assert str(tmp_path / "checkpoints" / str(step)) in message
    assert "no intact checkpoint" in message


def test_a_checkpoint_of_another_state_layout_is_not_taken_for_damage(setup, tmp_path):
    adapter, queries = setup
    with pytest.raises(Killed):
        run_stream(adapter, stream(queries, 4), checkpoint_dir=tmp_path, checkpoint_every=3)
    other = Adapter.create(
        toy_apply,
        adapter.params(adapter.constants.initial),
        adapter.constants.gallery,
        config=adapter.config.replace(bank_size=16),
        rules=[(r"^(ln|head)/", True)],  # more adapted leaves: another state layout
        source=(adapter.constants.source_inputs, adapter.constants.source_targets),
    )
    with pytest.raises(ValueError, match="state layout does not match"):
        run_stream(other, stream(queries), checkpoint_dir=tmp_path, checkpoint_every=3)
    assert (tmp_path / "checkpoints" / "3").is_dir() and not (tmp_path / "damaged").exists()


def test_a_damaged_row_file_is_an_error_naming_it(setup, tmp_path):
    adapter, queries = setup
    with pytest.raises(Killed):
        run_stream(adapter, stream(queries, 7), checkpoint_dir=tmp_path, checkpoint_every=3)
    rows = tmp_path / "rows" / "rows_0000000000.npz"
    rows.write_bytes(rows.read_bytes()[:50])
    with pytest.raises(ValueError, match=rf"{rows}: cannot read the row file"):
        run_stream(adapter, stream(queries), checkpoint_dir=tmp_path, checkpoint_every=3)
