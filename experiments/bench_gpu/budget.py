"""Time budgets, the timed loop and memory readings of the benchmark rows."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable

from experiments.bench_gpu.grid import Row


class Budget:
    """Wall-clock budget of one invocation, with the cheapest row seen per row group."""

    def __init__(self, total_s: float, row_s: float):
        self.start = time.perf_counter()
        self.total_s = total_s
        self.row_s = row_s
        self.cost: dict[tuple, float] = {}

    def left(self) -> float:
        return self.total_s - (time.perf_counter() - self.start)

    def record(self, row: Row, seconds: float) -> None:
        self.cost[row.group] = min(seconds, self.cost.get(row.group, float("inf")))

    def why_skip(self, row: Row) -> str | None:
        left = self.left()
        if left <= 0:
            return "skipped: invocation budget spent"
        cheapest = self.cost.get(row.group)
        if cheapest is not None and cheapest > left:
            return f"skipped: the cheapest similar row took {cheapest:.0f} s, {left:.0f} s left"
        return None


def timed_batches(
    estimate_s: float, wanted: int, row_s: float, spent_s: float, repeats: int = 1
) -> int:
    """How many timed batches (per repeat) fit in what is left of the row budget (>= 1)."""
    room = max(row_s - spent_s, 0.0) / repeats
    return int(max(1, min(wanted, room // max(estimate_s, 1e-6))))


def measure(
    run_batch: Callable[[int], None],
    sync: Callable[[], None],
    first_run_s: float,
    args,
    row_s: float,
) -> tuple[float, int, str, float | None]:
    """Seconds per batch of ``run_batch(i)`` (warm), how many batches were timed, how, and
    the process CPU time per batch (all threads; None for a slow row).

    One untimed call estimates the per-batch time; then ``repeats`` loops of n batches, one
    ``sync`` at the end of each, the fastest loop counts (and the least CPU time of a loop).
    A row whose first run already took half the row budget is reported from that first run
    alone. On a shared CPU the CPU time moves much less with the machine's load than the
    wall time does.
    """
    if first_run_s > row_s / 2:
        return first_run_s, 1, "first run (slow row)", None
    start = time.perf_counter()
    run_batch(1)
    sync()
    estimate = time.perf_counter() - start
    n = timed_batches(estimate, args.batches, row_s, estimate, args.repeats)
    fastest = least_cpu = float("inf")
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            run_batch(i)
        sync()
        fastest = min(fastest, time.perf_counter() - start)
        least_cpu = min(least_cpu, time.process_time() - start_cpu)
    return fastest / n, n, "timed", least_cpu / n


# ----------------------------------------------------------------------------- memory


def max_rss_bytes() -> int:
    """Peak resident memory of this process (bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def jax_peak_bytes() -> tuple[int, str]:
    """Device ``peak_bytes_in_use`` when the backend reports it, else max RSS."""
    import jax

    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use (process)"
    return max_rss_bytes(), "max RSS (process)"


def executable_bytes(compiled) -> int | None:
    """The step executable's footprint from XLA's memory analysis (None if unavailable)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # backends without memory analysis
        return None
    if m is None:
        return None
    peak = getattr(m, "peak_memory_in_bytes", 0) or 0
    if peak > 0:
        return int(peak)
    return int(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )
