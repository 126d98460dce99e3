"""The online loop: feed a stream of batches through an adapter and collect what is asked for.

No host sync per step: each step's outputs start their device-to-host copy at once and are
read only a few batches later, when the copy has long finished, so the device never waits.
Every batch is checked on the host first (:meth:`rest_jax.adapter.Adapter.check`).

Memory stays flat on long streams: the host keeps only what ``keep`` asks for (full score
rows, top-k items, or per-batch metrics only), packed into numpy arrays every
``COMPACT_EVERY`` batches.

Crash-safe resume: with ``checkpoint_dir`` and ``checkpoint_every=n`` the loop writes, every
n batches, the kept rows so far (rest_jax/checkpoint.py) and then the whole state with orbax.
Calling :func:`run_stream` again with the same directory and the same (deterministic) stream
resumes from the last checkpoint: it restores the state, reloads the rows, skips the batches
already done and carries on. On CPU the result is bit-identical to an uninterrupted run.
A damaged newest checkpoint is set aside with a warning and the run resumes from the newest
intact one (rest_jax/checkpoint.py).
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from rest_jax.adapter import Adapter, pad_batch
from rest_jax.checkpoint import StreamCheckpointer
from rest_jax.step import AdaptState

KEEP = ("scores", "top_k", "metrics")
COMPACT_EVERY = 256
CHECKPOINT_FORMAT = 2  # 2: the row keys top_ids, top_scores (were topk_ids, topk_scores)
ROW_KEYS = ("query_ids", "answered", "scores", "top_ids", "top_scores")
log = logging.getLogger("rest_jax")


class StreamResult(NamedTuple):
    """What a stream produced, rows in stream order, padded rows dropped.

    Attributes:
      query_ids: (Q,) the ``ids`` of the batches' valid rows (or their running position);
        None when ``keep="metrics"`` (nothing per query is kept).
      scores: (Q, N) scores when ``keep="scores"``, else None. Rows of queries with
        non-finite inputs are NaN (see ``answered``).
      top_ids, top_scores: (Q, k) best gallery items when ``keep="top_k"``, else None
        (ids -1 and scores NaN for unanswered queries).
      metrics: name -> (num_batches, steps) array (per-step scalars of every batch).
      rolled_back: (num_batches,) bool, batches whose update was rejected.
      final_state: the state after the last batch.
      reset: (num_batches,) bool, batches on which the collapse guard restored the source.
      answered: (Q,) bool, false for queries with non-finite inputs; None for "metrics".
      batch_metrics: name -> (num_batches,) per-batch scalars (``nonfinite_rows``,
        ``distinct_top1``, ``collapse_ema``).
    """

    query_ids: np.ndarray | None
    scores: np.ndarray | None
    top_ids: np.ndarray | None
    top_scores: np.ndarray | None
    metrics: dict[str, np.ndarray]
    rolled_back: np.ndarray
    final_state: AdaptState
    reset: np.ndarray | None = None
    answered: np.ndarray | None = None
    batch_metrics: dict[str, np.ndarray] | None = None


def _summarise(outputs, keep: str, top_k: int):
    """Device-side reduction of a step's outputs to what is kept."""
    kept = {
        "metrics": outputs.metrics,
        "rolled_back": outputs.rolled_back,
        "reset": outputs.reset,
        "batch_metrics": outputs.batch_metrics,
    }
    if keep != "metrics":
        kept["answered"] = outputs.answered
    if keep == "scores":
        kept["scores"] = outputs.scores
    elif keep == "top_k" and outputs.scores is None:  # the step searched its own top-K
        kept["top_scores"] = outputs.top_scores[:, :top_k]
        kept["top_ids"] = outputs.top_ids[:, :top_k]
    elif keep == "top_k":
        answered = outputs.answered[:, None]
        scores = jnp.where(answered, outputs.scores, -jnp.inf)
        top_scores, top_ids = jax.lax.top_k(scores, top_k)
        kept["top_scores"] = jnp.where(answered, top_scores, jnp.nan)
        kept["top_ids"] = jnp.where(answered, top_ids, -1)
    return kept


@functools.lru_cache(maxsize=32)
def _summariser(keep: str, top_k: int, mesh) -> Callable:
    """The jitted :func:`_summarise`. With a mesh its outputs are replicated, so that every
    process can read them (a score row sharded along the gallery spans other hosts)."""
    replicated = None if mesh is None else NamedSharding(mesh, PartitionSpec())
    return jax.jit(functools.partial(_summarise, keep=keep, top_k=top_k), out_shardings=replicated)


def _concat(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not chunks:
        return {}
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def _num_batches(chunk: dict[str, np.ndarray]) -> int:
    return len(chunk["rolled_back"]) if chunk else 0


def _append_chunk(chunks: list[dict[str, np.ndarray]], chunk: dict[str, np.ndarray]) -> None:
    """Appends, then merges trailing chunks while the older is not larger (a binary counter):
    O(log n) chunks, each row copied O(log n) times, however long the stream."""
    chunks.append(chunk)
    while len(chunks) > 1 and _num_batches(chunks[-2]) <= _num_batches(chunks[-1]):
        chunks[-2:] = [_concat(chunks[-2:])]


class _Collector:
    """Host-side rows of a stream, packed into numpy chunks (flat dicts of arrays).

    Per-batch entries (``metrics:<name>``, ``batch:<name>``, ``rolled_back``, ``reset``) are
    stacked along the batch axis; per-query entries (:data:`ROW_KEYS`) are concatenated
    over the valid rows. ``saved`` holds the rows already written to a checkpoint,
    ``unsaved`` and ``open`` the rest.
    """

    def __init__(self, keep: str):
        self.keep = keep
        self.open: list[dict[str, np.ndarray]] = []
        self.unsaved: list[dict[str, np.ndarray]] = []
        self.saved: list[dict[str, np.ndarray]] = []

    def add(self, host: dict, ids: np.ndarray, mask: np.ndarray) -> None:
        entry = {f"metrics:{k}": np.asarray(v) for k, v in host["metrics"].items()}
        entry.update({f"batch:{k}": np.asarray(v) for k, v in host["batch_metrics"].items()})
        entry["rolled_back"] = np.asarray(host["rolled_back"])
        entry["reset"] = np.asarray(host["reset"])
        if self.keep != "metrics":
            entry["query_ids"] = ids[mask]
            for name in ROW_KEYS[1:]:
                if name in host:
                    entry[name] = np.asarray(host[name])[mask]
        self.open.append(entry)
        if len(self.open) >= COMPACT_EVERY:
            self.pack()

    def pack(self) -> None:
        """Moves the open per-batch entries into one unsaved chunk."""
        if not self.open:
            return
        chunk = {}
        for name in self.open[0]:
            parts = [entry[name] for entry in self.open]
            chunk[name] = np.concatenate(parts) if name in ROW_KEYS else np.stack(parts)
        _append_chunk(self.unsaved, chunk)
        self.open = []

    def take_unsaved(self) -> dict[str, np.ndarray]:
        """The rows not yet saved, as one chunk, now counted as saved."""
        self.pack()
        rows = _concat(self.unsaved)
        self.unsaved = []
        if rows:
            _append_chunk(self.saved, rows)
        return rows

    def load_saved(self, chunk: dict[str, np.ndarray]) -> None:
        _append_chunk(self.saved, chunk)

    def merged(self) -> dict[str, np.ndarray]:
        """Every row so far, concatenated."""
        self.pack()
        return _concat(self.saved + self.unsaved)

    def num_batches(self) -> int:
        chunks = self.saved + self.unsaved
        return sum(_num_batches(c) for c in chunks) + len(self.open)


def _result(collector: _Collector, final_state: AdaptState) -> StreamResult:
    rows = collector.merged()
    if not rows:
        raise ValueError("the stream is empty (no batch)")

    def prefixed(prefix):
        return {k[len(prefix) :]: v for k, v in rows.items() if k.startswith(prefix)}

    return StreamResult(
        query_ids=rows.get("query_ids"),
        scores=rows.get("scores"),
        top_ids=rows.get("top_ids"),
        top_scores=rows.get("top_scores"),
        metrics=prefixed("metrics:"),
        rolled_back=rows["rolled_back"],
        final_state=final_state,
        reset=rows["reset"],
        answered=rows.get("answered"),
        batch_metrics=prefixed("batch:"),
    )


def collect(rows: list[dict], keep: str, final_state: AdaptState) -> StreamResult:
    """Concatenates per-batch host results (dicts as passed to ``on_batch``), dropping padding."""
    collector = _Collector(keep)
    for host in rows:
        collector.add(host, np.asarray(host["ids"]), np.asarray(host["mask"], bool))
    return _result(collector, final_state)


def _log_events(index: int, host: dict) -> None:
    if host["rolled_back"]:
        log.warning("batch %d: update rejected (non-finite or no usable row); state kept", index)
    if host["reset"]:
        log.warning(
            "batch %d: collapse guard restored the source state (distinct top-1 EMA %.3f)",
            index,
            float(host["batch_metrics"]["collapse_ema"]),
        )
    if host["batch_metrics"]["nonfinite_rows"]:
        log.warning(
            "batch %d: %d rows with non-finite inputs left unanswered",
            index,
            int(host["batch_metrics"]["nonfinite_rows"]),
        )


def _loop_fingerprint(adapter: Adapter, keep: str, top_k: int) -> dict:
    """What must agree between a checkpoint and the run resuming from it."""
    config = json.loads(json.dumps(adapter.config.to_dict(), default=str))
    return {"keep": keep, "top_k": top_k if keep == "top_k" else None, "config": config}


def _check_resumable(saved: dict, expected: dict, directory) -> None:
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint in {directory} has an unknown format {saved.get('format')}")
    for name in ("keep", "top_k"):
        if saved[name] != expected[name]:
            raise ValueError(
                f"checkpoint in {directory} was written with {name}={saved[name]!r}; "
                f"this run asks {name}={expected[name]!r}"
            )
    if saved["config"] != expected["config"]:
        changed = sorted(
            k
            for k in set(saved["config"]) | set(expected["config"])
            if saved["config"].get(k) != expected["config"].get(k)
        )
        raise ValueError(
            f"checkpoint in {directory} was written with another config (fields {changed})"
        )


def run_stream(
    adapter: Adapter,
    batches: Iterable[dict],
    *,
    state: AdaptState | None = None,
    keep: str = "scores",
    top_k: int = 10,
    lag: int = 2,
    on_batch: Callable[[int, dict], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
) -> StreamResult:
    """Runs the adapter over a stream.

    Args:
      adapter: a :class:`rest_jax.adapter.Adapter`.
      batches: dicts with ``"inputs"``, ``"mask"`` and optionally ``"ids"`` ((B,) int).
      state: the starting state (default: a fresh ``adapter.init_state()``); ignored when
        resuming from a checkpoint.
      keep: ``"scores"`` (full rows), ``"top_k"`` (best ``top_k`` items) or ``"metrics"``
        (per-batch metrics only, for very long streams).
      top_k: how many items ``keep="top_k"`` keeps.
      lag: how many batches a result waits on the device before it is read.
      on_batch: called as ``on_batch(index, host_result)`` when a batch's result is read
        (not for batches skipped on resume).
      checkpoint_dir: where to checkpoint (and resume from); None = no checkpoints. Single
        process only.
      checkpoint_every: batches between checkpoints (a final one is written at the end).

    Returns:
      A :class:`StreamResult`.

    Raises:
      ValueError: bad ``keep``/``top_k``/``lag``/``checkpoint_every``, a bad batch (see
        :mod:`rest_jax.validation`), an empty stream, a checkpoint written by another
        config or ``keep``, or a stream shorter than the checkpoint's position.
    """
    _check_loop_arguments(adapter, keep, top_k, lag, checkpoint_dir, checkpoint_every)
    collector = _Collector(keep)
    summarise = _summariser(keep, top_k, adapter.mesh)
    checkpointer = StreamCheckpointer(checkpoint_dir) if checkpoint_dir is not None else None
    fingerprint = _loop_fingerprint(adapter, keep, top_k)
    try:
        done, position = 0, 0
        if checkpointer is not None and checkpointer.latest() is not None:
            state, done, position = _resume(checkpointer, adapter, fingerprint, collector)
        state = adapter.init_state() if state is None else state
        reader = _LaggedReader(collector, position, on_batch)
        for index, batch in enumerate(_skip_batches(batches, done), start=done):
            state, outputs = adapter.step(state, batch, index=index)
            reader.push(index, batch.get("ids"), batch["mask"], summarise(outputs))
            reader.drain(lag)
            if checkpointer is not None and (index + 1) % checkpoint_every == 0:
                _save(checkpointer, reader, state, index + 1, fingerprint)
        reader.drain(0)
        total = collector.num_batches()
        if checkpointer is not None and total and checkpointer.latest() != total:
            _save(checkpointer, reader, state, total, fingerprint)
    finally:
        if checkpointer is not None:
            checkpointer.close()
    return _result(collector, state)


def _check_loop_arguments(
    adapter: Adapter, keep: str, top_k: int, lag: int, checkpoint_dir, checkpoint_every: int
) -> None:
    """The checks of :func:`run_stream`'s arguments (its Raises section)."""
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {KEEP}, got {keep!r}")
    gallery_size = adapter.constants.gallery.shape[0]
    if keep == "top_k" and not 1 <= top_k <= gallery_size:
        raise ValueError(f"top_k must be in 1..{gallery_size} (the gallery size), got {top_k}")
    step_top_k = adapter.config.output_top_k
    if step_top_k is not None and keep == "scores":
        raise ValueError(
            f"keep='scores' needs the full score rows, but output_top_k={step_top_k} makes the "
            "step return a top-K only: use keep='top_k' or 'metrics'"
        )
    if step_top_k is not None and keep == "top_k" and top_k > step_top_k:
        raise ValueError(f"top_k ({top_k}) is larger than the step's output_top_k ({step_top_k})")
    if lag < 0:
        raise ValueError(f"lag must be >= 0, got {lag}")
    if checkpoint_dir is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if checkpoint_dir is not None and jax.process_count() > 1:
        # Every process would write the same row files; not built (see docs/benchmarks.md).
        raise ValueError(
            f"checkpoint_dir is not supported with several processes ({jax.process_count()})"
        )


class _LaggedReader:
    """Reads each batch's summarised outputs a few batches after its step, into a collector.

    Each pushed result has started its device-to-host copy; :meth:`drain` reads the oldest
    ones, numbers their valid rows (``position``: the running query position, used as ids
    when a batch has none), logs their events and calls ``on_batch``.
    """

    def __init__(self, collector: _Collector, position: int, on_batch: Callable | None):
        self.collector = collector
        self.position = position
        self.on_batch = on_batch
        self.pending: collections.deque = collections.deque()

    def push(self, index: int, ids: Any, mask: Any, device_result: dict) -> None:
        for leaf in jax.tree.leaves(device_result):
            leaf.copy_to_host_async()
        self.pending.append((index, ids, mask, device_result))

    def drain(self, limit: int) -> None:
        """Reads results until at most ``limit`` wait."""
        while len(self.pending) > limit:
            index, ids, mask, device_result = self.pending.popleft()
            host = jax.device_get(device_result)
            mask = np.asarray(mask, bool)
            if ids is None:
                ids = np.arange(self.position, self.position + mask.shape[0])
            self.position += int(mask.sum())
            host["ids"], host["mask"] = np.asarray(ids), mask
            _log_events(index, host)
            self.collector.add(host, host["ids"], mask)
            if self.on_batch is not None:
                self.on_batch(index, host)


def _resume(
    checkpointer: StreamCheckpointer, adapter: Adapter, fingerprint: dict, collector: _Collector
) -> tuple[AdaptState, int, int]:
    """Restores the newest checkpoint: ``(state, batches_done, position)``; the saved rows
    go into ``collector``."""
    state, saved = checkpointer.restore(adapter.constants.initial)
    _check_resumable(saved, fingerprint, checkpointer.directory)
    done, position = saved["batches_done"], saved["position"]
    for chunk in _saved_rows(checkpointer, done):
        collector.load_saved(chunk)
    log.info("resuming from %s after %d batches", checkpointer.directory, done)
    return state, done, position


def _save(
    checkpointer: StreamCheckpointer,
    reader: _LaggedReader,
    state: AdaptState,
    batches_done: int,
    fingerprint: dict,
) -> None:
    """Reads every pending result, writes the rows not yet saved, then the state."""
    reader.drain(0)
    rows = reader.collector.take_unsaved()
    if rows:
        checkpointer.write_rows(batches_done - _num_batches(rows), rows)
    loop = {
        "format": CHECKPOINT_FORMAT,
        "batches_done": batches_done,
        "position": reader.position,
        **fingerprint,
    }
    checkpointer.save(batches_done, state, loop)


def _skip_batches(batches: Iterable[dict], done: int):
    """The stream after its first ``done`` batches (those of a checkpoint)."""
    iterator = iter(batches)
    end = object()
    for skipped in range(done):
        if next(iterator, end) is end:
            raise ValueError(
                f"the stream ended after {skipped} batches, before the checkpoint's "
                f"position ({done} batches)"
            )
    return iterator


def _saved_rows(checkpointer: StreamCheckpointer, done: int):
    """The row files of the first ``done`` batches, checked to tile them exactly.

    A file starting at or after ``done`` is an orphan of a crash between writing rows and
    committing their checkpoint: it is ignored (and overwritten when the run gets there).
    """
    expected = 0
    for first, name in checkpointer.row_files():
        if first >= done:
            break
        chunk = checkpointer.read_rows(name)
        if first != expected:
            raise ValueError(
                f"checkpoint rows in {checkpointer.rows_dir} do not tile the stream: "
                f"{name} starts at batch {first}, expected {expected}"
            )
        expected += _num_batches(chunk)
        yield chunk
    if expected != done:
        raise ValueError(
            f"checkpoint rows in {checkpointer.rows_dir} cover {expected} batches; the "
            f"checkpoint is at {done}"
        )


def batches_from_array(inputs: Any, batch_size: int, order: np.ndarray | None = None):
    """Yields fixed-size padded batches (with ``mask`` and ``ids``) over the rows of ``inputs``."""
    n = jax.tree.leaves(inputs)[0].shape[0]
    if n == 0:
        raise ValueError("the stream is empty (0 queries)")
    order = np.arange(n) if order is None else np.asarray(order)
    for start in range(0, len(order), batch_size):
        ids = order[start : start + batch_size]
        batch = pad_batch(jax.tree.map(lambda x, ids=ids: np.asarray(x)[ids], inputs), batch_size)
        batch["ids"] = np.concatenate([ids, -np.ones(batch_size - len(ids), ids.dtype)])
        yield batch
