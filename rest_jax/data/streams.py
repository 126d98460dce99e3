"""Query streams: fixed orders and fixed-shape batches for online adaptation.

docs/method.md sections 7.2 (stream order) and 7.3 (settings). A stream is planned up front
as a ``StreamPlan``: for every batch slot the domain and the query id it holds (-1 for
padding), so a stream is fully determined by its plan and can be inspected, tested and logged
before any model runs. ``iterate_batches`` then gathers the inputs batch by batch.

Every batch has exactly ``batch_size`` rows (one jit compilation for the whole stream). The
last batch (of the stream, or of each domain in a continual stream) is padded: padded rows
repeat the batch's first valid row (or are zeros) and have ``mask = False``, ``ids = -1``,
``domain = -1``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

ORDERS = ("reference", "seeded", "identity")
PAD_MODES = ("first", "zeros")


def reference_order(n: int) -> np.ndarray:
    """The reference stream order: torch.randperm(n) with a generator seeded 0, without torch.

    torch's CPU randperm draws from MT19937 seeded 0 (the same state as numpy's
    ``RandomState(0)``) and runs a forward Fisher-Yates shuffle: r = 0..n-1; for i = 0..n-2:
    z = draw_i mod (n - i), swap r[i] and r[i + z], draw_i being the i-th raw 32-bit output.
    ``RandomState.randint(0, 2**32, dtype=uint64)`` returns exactly those raw outputs.

    Returns:
      int64 [n]. For n = 1000 it starts 44, 37, 675, 775, 947, 209, 719, 500, 561, 264.
    """
    n = _check_count(n)
    order = np.arange(n, dtype=np.int64)
    if n < 2:
        return order
    draws = np.random.RandomState(0).randint(0, 2**32, size=n - 1, dtype=np.uint64)
    offsets = (draws % np.arange(n, 1, -1, dtype=np.uint64)).astype(np.int64)
    for i, z in enumerate(offsets.tolist()):
        j = i + z
        order[i], order[j] = order[j], order[i]
    return order


def seeded_order(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of 0..n-1: ``np.random.default_rng(seed).permutation(n)``."""
    return np.random.default_rng(seed).permutation(_check_count(n)).astype(np.int64)


def stream_order(n: int, order: str = "reference", seed: int = 0) -> np.ndarray:
    """The order of one domain's queries: "reference" (torch.randperm(n, seed 0)), "seeded"
    (``seeded_order(n, seed)``) or "identity" (0..n-1)."""
    if order == "reference":
        return reference_order(n)
    if order == "seeded":
        return seeded_order(n, seed)
    if order == "identity":
        return np.arange(_check_count(n), dtype=np.int64)
    raise ValueError(f"unknown order {order!r}; expected one of {ORDERS}")


def _check_count(n: int) -> int:
    if int(n) != n or n < 0:
        raise ValueError(f"a query count must be a non-negative integer, got {n}")
    return int(n)


@dataclasses.dataclass(frozen=True)
class StreamPlan:
    """The layout of a stream, batch by batch.

    Attributes:
      domain: int32 [n_batches, batch_size], the domain of each row (-1 for padding).
      ids: int32 [n_batches, batch_size], the query id within its domain (-1 for padding).
      mask: bool [n_batches, batch_size], True on real rows.
    """

    domain: np.ndarray
    ids: np.ndarray
    mask: np.ndarray

    @property
    def n_batches(self) -> int:
        return self.ids.shape[0]

    @property
    def batch_size(self) -> int:
        return self.ids.shape[1]

    @property
    def n_queries(self) -> int:
        return int(self.mask.sum())

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(domain, id) of the real rows in stream order, each int32 [n_queries]."""
        return self.domain[self.mask], self.ids[self.mask]

    def domain_counts(self, n_domains: int | None = None) -> np.ndarray:
        """Number of real rows of each domain."""
        return np.bincount(self.domain[self.mask], minlength=n_domains or 0)


def _pack(domain: np.ndarray, ids: np.ndarray, batch_size: int) -> StreamPlan:
    """Cuts a flat (domain, id) sequence into batches, padding the last one."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(ids)
    n_batches = -(-n // batch_size)
    size = n_batches * batch_size
    flat_domain = np.full(size, -1, np.int32)
    flat_ids = np.full(size, -1, np.int32)
    flat_domain[:n], flat_ids[:n] = domain, ids
    shape = (n_batches, batch_size)
    mask = (np.arange(size) < n).reshape(shape)
    return StreamPlan(flat_domain.reshape(shape), flat_ids.reshape(shape), mask)


def _concat(plans: Sequence[StreamPlan], batch_size: int) -> StreamPlan:
    if not plans:
        empty = np.zeros((0, batch_size), np.int32)
        return StreamPlan(empty, empty.copy(), np.zeros((0, batch_size), bool))
    return StreamPlan(
        np.concatenate([p.domain for p in plans]),
        np.concatenate([p.ids for p in plans]),
        np.concatenate([p.mask for p in plans]),
    )


def single_domain_plan(
    n: int, batch_size: int = 64, order: str = "reference", seed: int = 0, domain: int = 0
) -> StreamPlan:
    """Query-shift stream (one domain): n queries in the given order, in batches."""
    ids = stream_order(n, order, seed)
    return _pack(np.full(len(ids), domain, np.int32), ids, batch_size)


def allocate(total: int, proportions: Sequence[float], capacity: Sequence[int]) -> np.ndarray:
    """Integer counts n_d summing to ``total`` with n_d ~ total * p_d (largest remainder).

    Raises ValueError when a domain would need more queries than it has.
    """
    p = np.asarray(proportions, np.float64)
    if p.ndim != 1 or len(p) == 0 or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"proportions must be non-negative with a positive sum, got {p}")
    p = p / p.sum()
    exact = total * p
    counts = np.floor(exact).astype(np.int64)
    remainder = total - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:remainder]] += 1
    capacity = np.asarray(capacity)
    if np.any(counts > capacity):
        d = int(np.argmax(counts > capacity))
        raise ValueError(
            f"domain {d} needs {counts[d]} queries but has {capacity[d]}; lower total or "
            "change proportions"
        )
    return counts


def mixed_plan(
    domain_sizes: Sequence[int],
    proportions: Sequence[float] | None = None,
    total: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    order: str = "reference",
) -> StreamPlan:
    """Diverse shift, ``mixed``: domains interleaved at random in given proportions.

    Domain d contributes n_d = allocate(total, proportions) queries, the first n_d of its own
    order (``stream_order(size_d, order, seed + d)``); the sequence of domain labels is a seeded
    shuffle (``default_rng(seed)``), so any prefix mixes the domains.

    Args:
      domain_sizes: number of queries available in each domain.
      proportions: share of each domain (default: proportional to the sizes).
      total: stream length (default: every query of every domain when proportions are
        default, else the largest total the proportions allow).
      batch_size: rows per batch.
      seed: seed of the interleaving (and of "seeded" orders).
      order: order of queries within each domain.
    """
    sizes = np.asarray([_check_count(s) for s in domain_sizes], np.int64)
    if len(sizes) == 0:
        raise ValueError("need at least one domain")
    if proportions is None:
        proportions = sizes.astype(np.float64)
    p = np.asarray(proportions, np.float64)
    if len(p) != len(sizes):
        raise ValueError(f"{len(p)} proportions for {len(sizes)} domains")
    if total is None:
        share = p / p.sum() if p.sum() > 0 else p
        with np.errstate(divide="ignore"):
            total = int(np.min(np.where(share > 0, sizes / share, np.inf)) + 1e-9)
    counts = allocate(_check_count(total), p, sizes)
    labels = np.repeat(np.arange(len(sizes), dtype=np.int32), counts)
    labels = labels[np.random.default_rng(seed).permutation(len(labels))]
    ids = np.empty(len(labels), np.int64)
    for d, size in enumerate(sizes.tolist()):
        where = labels == d
        ids[where] = stream_order(size, order, seed + d)[: where.sum()]
    return _pack(labels, ids, batch_size)


def continual_plan(
    domain_sizes: Sequence[int],
    batch_size: int = 64,
    order: str = "reference",
    seed: int = 0,
    split_at_domains: bool = True,
) -> StreamPlan:
    """Diverse shift, ``continual``: domain after domain (the model is never reset).

    Args:
      domain_sizes: number of queries in each domain, in stream order.
      batch_size: rows per batch.
      order: order within each domain (``stream_order(size, order, seed + d)``).
      seed: seed for "seeded" orders.
      split_at_domains: if True every batch holds one domain (each domain's last batch is
        padded); if False the domains are concatenated and only the stream's last batch is.
    """
    parts = [
        (np.full(size, d, np.int32), stream_order(size, order, seed + d))
        for d, size in enumerate(domain_sizes)
    ]
    if split_at_domains:
        return _concat([_pack(dom, ids, batch_size) for dom, ids in parts], batch_size)
    if not parts:
        return _concat([], batch_size)
    return _pack(
        np.concatenate([dom for dom, _ in parts]), np.concatenate([i for _, i in parts]), batch_size
    )


class Batch(TypedDict):
    """One batch as the adaptation step takes it.

    inputs: the queries' inputs, [B, ...] (or a dict of such arrays).
    mask: bool [B], True on real rows.
    ids: int32 [B], query id within its domain, -1 on padding.
    domain: int32 [B], domain index, -1 on padding.
    """

    inputs: Any
    mask: np.ndarray
    ids: np.ndarray
    domain: np.ndarray


def take_rows(inputs: Any, rows) -> Any:
    """``inputs[rows]`` for an array or a dict of arrays (rows: ids, a mask or a slice)."""
    if isinstance(inputs, Mapping):
        return {k: take_rows(v, rows) for k, v in inputs.items()}
    return np.asarray(inputs)[rows]


def num_rows(inputs: Any) -> int:
    """The number of queries in ``inputs`` (an array or a dict of arrays, rows first)."""
    if isinstance(inputs, Mapping):
        sizes = {num_rows(v) for v in inputs.values()}
        if len(sizes) != 1:
            raise ValueError(f"inputs of one domain disagree on their length: {sorted(sizes)}")
        return sizes.pop()
    return len(inputs)


def iterate_batches(
    plan: StreamPlan, domain_inputs: Sequence[Any] | Any, pad: str = "first"
) -> Iterator[Batch]:
    """Yields the plan's batches with their inputs gathered (numpy arrays, fixed shapes).

    Args:
      plan: the stream layout.
      domain_inputs: per domain, an array [n_d, ...] or a dict of arrays indexed by query id
        (for a single-domain plan the array itself is accepted).
      pad: "first" fills padded rows with the batch's first real row, "zeros" with zeros.
    """
    if pad not in PAD_MODES:
        raise ValueError(f"unknown pad mode {pad!r}; expected one of {PAD_MODES}")
    if isinstance(domain_inputs, Mapping | np.ndarray):
        domain_inputs = [domain_inputs]
    sizes = [num_rows(x) for x in domain_inputs]
    used = plan.domain[plan.mask]
    if len(used) and used.max() >= len(domain_inputs):
        raise ValueError(f"plan uses domain {used.max()} but {len(domain_inputs)} were given")
    for d in np.unique(used).tolist():
        top = plan.ids[plan.mask & (plan.domain == d)].max()
        if top >= sizes[d]:
            raise ValueError(f"plan uses query {top} of domain {d}, which has {sizes[d]}")
    for b in range(plan.n_batches):
        mask, ids, domain = plan.mask[b], plan.ids[b], plan.domain[b]
        first = int(np.argmax(mask))
        pieces = []
        for d in np.unique(domain[mask]).tolist():
            rows = np.nonzero(mask & (domain == d))[0]
            pieces.append((rows, take_rows(domain_inputs[d], ids[rows])))
        yield {
            "inputs": _assemble(pieces, len(ids), first, pad),
            "mask": mask.copy(),
            "ids": ids.copy(),
            "domain": domain.copy(),
        }


def _assemble(pieces, batch_size: int, first: int, pad: str) -> Any:
    """Scatters per-domain gathered rows into one batch and fills the padding."""
    if not pieces:
        raise ValueError("a stream batch has no real row; plans never produce one")
    template = pieces[0][1]
    if isinstance(template, Mapping):
        return {
            k: _assemble([(rows, part[k]) for rows, part in pieces], batch_size, first, pad)
            for k in template
        }
    out = np.zeros((batch_size, *template.shape[1:]), template.dtype)
    filled = np.zeros(batch_size, bool)
    for rows, part in pieces:
        out[rows] = part
        filled[rows] = True
    if pad == "first":
        out[~filled] = out[first]
    return out


def query_shift_stream(
    inputs: Any, batch_size: int = 64, order: str = "reference", seed: int = 0, pad: str = "first"
) -> Iterator[Batch]:
    """Batches of one shifted domain (QS): ``iterate_batches(single_domain_plan(...))``."""
    plan = single_domain_plan(num_rows(inputs), batch_size, order, seed)
    return iterate_batches(plan, [inputs], pad)


def mixed_stream(
    domain_inputs: Sequence[Any],
    proportions: Sequence[float] | None = None,
    total: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    order: str = "reference",
    pad: str = "first",
) -> Iterator[Batch]:
    """Batches of a ``mixed`` diverse-shift stream (see ``mixed_plan``)."""
    sizes = [num_rows(x) for x in domain_inputs]
    plan = mixed_plan(sizes, proportions, total, batch_size, seed, order)
    return iterate_batches(plan, domain_inputs, pad)


def continual_stream(
    domain_inputs: Sequence[Any],
    batch_size: int = 64,
    order: str = "reference",
    seed: int = 0,
    split_at_domains: bool = True,
    pad: str = "first",
) -> Iterator[Batch]:
    """Batches of a ``continual`` diverse-shift stream (see ``continual_plan``)."""
    sizes = [num_rows(x) for x in domain_inputs]
    plan = continual_plan(sizes, batch_size, order, seed, split_at_domains)
    return iterate_batches(plan, domain_inputs, pad)
