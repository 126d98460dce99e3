"""The online loop: feed a stream of batches through an adapter and collect what is asked for.

No host sync per step: each step's outputs start their device-to-host copy at once and are
read only a few batches later, when the copy has long finished, so the device never waits.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import numpy as np

from rest_jax.adapter import Adapter
from rest_jax.step import AdaptState

KEEP = ("scores", "topk", "metrics")


class StreamResult(NamedTuple):
    """What a stream produced, rows in stream order, padded rows dropped.

    Attributes:
      query_ids: (Q,) the ``ids`` of the batches' valid rows (or their running position).
      scores: (Q, N) scores when ``keep="scores"``, else None.
      topk_ids, topk_scores: (Q, k) best gallery items when ``keep="topk"``, else None.
      metrics: name -> (num_batches, steps) array (per-step scalars of every batch).
      rolled_back: (num_batches,) bool, batches whose update was rejected.
      final_state: the state after the last batch.
    """

    query_ids: np.ndarray
    scores: np.ndarray | None
    topk_ids: np.ndarray | None
    topk_scores: np.ndarray | None
    metrics: dict[str, np.ndarray]
    rolled_back: np.ndarray
    final_state: AdaptState


def _summarise(outputs, keep: str, top_k: int):
    """Device-side reduction of a step's outputs to what is kept."""
    kept = {"metrics": outputs.metrics, "rolled_back": outputs.rolled_back}
    if keep == "scores":
        kept["scores"] = outputs.scores
    elif keep == "topk":
        kept["topk_scores"], kept["topk_ids"] = jax.lax.top_k(outputs.scores, top_k)
    return kept


def run_stream(
    adapter: Adapter,
    batches: Iterable[dict],
    *,
    state: AdaptState | None = None,
    keep: str = "scores",
    top_k: int = 10,
    lag: int = 2,
    on_batch: Callable[[int, dict], None] | None = None,
) -> StreamResult:
    """Runs the adapter over a stream.

    Args:
      adapter: a :class:`rest_jax.adapter.Adapter`.
      batches: dicts with ``"inputs"``, ``"mask"`` and optionally ``"ids"`` ((B,) int).
      state: the starting state (default: a fresh ``adapter.init_state()``).
      keep: ``"scores"`` (full rows), ``"topk"`` (best ``top_k`` items) or ``"metrics"``.
      top_k: how many items ``keep="topk"`` keeps.
      lag: how many batches a result waits on the device before it is read.
      on_batch: called as ``on_batch(index, host_result)`` when a batch's result is read.

    Returns:
      A :class:`StreamResult`.
    """
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {KEEP}, got {keep!r}")
    summarise = jax.jit(_summarise, static_argnums=(1, 2))
    state = adapter.init_state() if state is None else state
    pending: collections.deque = collections.deque()
    rows: list[dict] = []
    position = 0

    def drain(limit: int):
        while len(pending) > limit:
            index, ids, mask, device_result = pending.popleft()
            host = jax.device_get(device_result)
            host["ids"], host["mask"] = ids, mask
            rows.append(host)
            if on_batch is not None:
                on_batch(index, host)

    for index, batch in enumerate(batches):
        mask = np.asarray(batch["mask"], bool)
        if not mask.any():
            raise ValueError(f"batch {index}: the mask marks no valid row")
        ids = batch.get("ids")
        if ids is None:
            ids = np.arange(position, position + mask.shape[0])
        position += int(mask.sum())
        state, outputs = adapter.step(state, {"inputs": batch["inputs"], "mask": mask})
        device_result = summarise(outputs, keep, top_k)
        for leaf in jax.tree.leaves(device_result):
            leaf.copy_to_host_async()
        pending.append((index, np.asarray(ids), mask, device_result))
        drain(lag)
    drain(0)
    if not rows:
        raise ValueError("the stream is empty (no batch)")
    return collect(rows, keep, state)


def collect(rows: list[dict], keep: str, final_state: AdaptState) -> StreamResult:
    """Concatenates per-batch host results, dropping padded rows."""

    def valid_rows(name):
        return np.concatenate([r[name][r["mask"]] for r in rows])

    metrics = {k: np.stack([r["metrics"][k] for r in rows]) for k in rows[0]["metrics"]}
    return StreamResult(
        query_ids=valid_rows("ids"),
        scores=valid_rows("scores") if keep == "scores" else None,
        topk_ids=valid_rows("topk_ids") if keep == "topk" else None,
        topk_scores=valid_rows("topk_scores") if keep == "topk" else None,
        metrics=metrics,
        rolled_back=np.array([r["rolled_back"] for r in rows]),
        final_state=final_state,
    )


def batches_from_array(inputs: Any, batch_size: int, order: np.ndarray | None = None):
    """Yields fixed-size padded batches (with ``mask`` and ``ids``) over the rows of ``inputs``."""
    from rest_jax.adapter import pad_batch

    n = jax.tree.leaves(inputs)[0].shape[0]
    if n == 0:
        raise ValueError("the stream is empty (0 queries)")
    order = np.arange(n) if order is None else np.asarray(order)
    for start in range(0, len(order), batch_size):
        ids = order[start : start + batch_size]
        batch = pad_batch(jax.tree.map(lambda x, ids=ids: np.asarray(x)[ids], inputs), batch_size)
        batch["ids"] = np.concatenate([ids, -np.ones(batch_size - len(ids), ids.dtype)])
        yield batch
