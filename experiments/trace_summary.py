"""Where a jitted step spends its device time, from a ``jax.profiler`` Perfetto trace.

    python -m experiments.trace_summary TRACE_DIR [--steps N]

``jax.profiler.trace(dir, create_perfetto_trace=True)`` writes
``dir/plugins/profile/<run>/perfetto_trace.json.gz``: Chrome trace events, complete events
(``"ph": "X"``) with a start and a duration in microseconds, on processes and threads named
by metadata events. This module sums the durations of the device's operations by name and
by kind (matmul, convolution, fused attention, other fusions, copies, collectives), per traced step.

Which events count as the device's operations:

- GPU/TPU: the processes whose name starts with ``/device:``. When one of their threads is
  named "XLA Ops" (one event per HLO operation), only those threads count; otherwise every
  device thread except the summary lines ("XLA Modules", "Steps", ...) counts, each event a
  kernel. Overlapping kernels on several streams are summed, so the total can exceed the
  wall time.
- CPU (no ``/device:`` process): the events of the XLA client's threads (names containing
  "XLAPjRtCpuClient" or "XLAEigen"), which are coarse (whole thunks).

Events whose name says they wait ("wait", "Await") are left out everywhere.

Events nest on a thread (a while loop around its body's operations, a thunk around its
kernels), so each event counts with its self time: its duration less that of the events it
contains. The raw per-line totals go into the summary as well, so that a trace whose layout
differs can still be read.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
from pathlib import Path

# First match wins; matched against the lower-cased operation or kernel name.
KINDS: tuple[tuple[str, str], ...] = (
    # cuDNN's convolutions (ViT's patch embedding: "cutlass_tensorop_..._fprop_...") before
    # its attention kernels, which the next line takes by the "cudnn" in their names.
    ("convolution", r"fprop|dgrad|wgrad|cudnn-conv|convolution"),
    ("fused attention", r"cudnn|fmha|flash|sdpa|dot_product_attention|attention"),
    ("matmul", r"gemm|cublas|cutlass|xmma|nvjet|matmul|dot|triton_gemm|wgmma"),
    ("collective", r"all-gather|all_gather|all-reduce|all_reduce|nccl|collective|reduce-scatter"),
    ("copy / transpose", r"copy|memcpy|memset|transpose|dynamic-update-slice|dynamic_update"),
    ("reduction fusion", r"reduce|softmax|input_fusion|row_reduction|column_reduction"),
    ("other fusion", r"fusion|loop_|elementwise|convert|multiply|add"),
)
SUMMARY_LINES = ("xla modules", "steps", "framework", "launch stats", "tensors", "source")
CPU_THREADS = ("xlapjrtcpuclient", "xlaeigen")
NEST_SLACK_US = 1e-3  # an event ending this much after another's end still counts as inside it
IDLE = re.compile(r"\bwait|await", re.IGNORECASE)  # a thread waiting on others, not working


def find_trace(log_dir: str | Path) -> Path:
    """The newest ``perfetto_trace.json.gz`` under ``log_dir``."""
    found = sorted(Path(log_dir).rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {log_dir}")
    return found[-1]


def load_events(path: str | Path) -> list[dict]:
    """The trace's events (a gzip'd JSON object with ``traceEvents``, or a bare list)."""
    with gzip.open(path, "rt") as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def kind_of(name: str) -> str:
    """The kind of an operation or kernel, by :data:`KINDS`."""
    lower = name.lower()
    for kind, pattern in KINDS:
        if re.search(pattern, lower):
            return kind
    return "other"


def _names(events: list[dict]) -> tuple[dict, dict]:
    processes, threads = {}, {}
    for e in events:
        if e.get("ph") != "M":
            continue
        if e.get("name") == "process_name":
            processes[e["pid"]] = str(e.get("args", {}).get("name", ""))
        elif e.get("name") == "thread_name":
            threads[(e["pid"], e.get("tid"))] = str(e.get("args", {}).get("name", ""))
    return processes, threads


def self_times(events: list[dict]) -> list[float]:
    """Each complete event's duration less the durations of the events directly inside it on
    the same thread.

    An event is inside another only when it starts and ends within it (a while loop around
    its body). GPU kernels on one stream may overlap their neighbours by a fraction of a
    microsecond (a kernel may launch before the previous one has drained); such partial
    overlaps are neighbours, not nesting, and keep their whole duration.
    """
    own = [float(e["dur"]) for e in events]
    by_thread = collections.defaultdict(list)
    for i, e in enumerate(events):
        by_thread[(e["pid"], e.get("tid"))].append(i)
    for indices in by_thread.values():
        indices.sort(key=lambda i: (float(events[i]["ts"]), -float(events[i]["dur"])))
        open_events: list[int] = []  # the chain of events containing the current one
        for i in indices:
            while open_events and _end(events[i]) > _end(events[open_events[-1]]) + NEST_SLACK_US:
                open_events.pop()
            if open_events:
                own[open_events[-1]] -= float(events[i]["dur"])
            open_events.append(i)
    return [max(t, 0.0) for t in own]


def busy_and_span(events: list[dict]) -> tuple[float, float]:
    """``(busy, span)`` in microseconds: the union of the events' intervals (time in which
    at least one runs) and the time from the first start to the last end. ``busy / span``
    is how much of the traced time the device worked; the rest is idle (launch gaps, host
    waits)."""
    if not events:
        return 0.0, 0.0
    intervals = sorted((float(e["ts"]), _end(e)) for e in events)
    busy, (start, end) = 0.0, intervals[0]
    for s, t in intervals[1:]:
        if s > end:
            busy += end - start
            start, end = s, t
        else:
            end = max(end, t)
    busy += end - start
    return busy, max(t for _, t in intervals) - intervals[0][0]


def _end(event: dict) -> float:
    return float(event["ts"]) + float(event["dur"])


def operation_events(events: list[dict]) -> tuple[str, list[dict], dict[str, float]]:
    """The events that are the device's operations (see the module docstring).

    Returns:
      ``(source, events, lines)``: ``source`` is "device ops", "device kernels" or "cpu
      threads"; ``lines`` maps every ``process / thread`` name to its summed duration (us).
    """
    processes, threads = _names(events)
    complete = [
        e
        for e in events
        if e.get("ph") == "X" and "dur" in e and "ts" in e and not IDLE.search(str(e.get("name")))
    ]
    lines: dict[str, float] = collections.defaultdict(float)

    def line(e):
        return f"{processes.get(e['pid'], e['pid'])} / {threads.get((e['pid'], e.get('tid')), '')}"

    for e in complete:
        lines[line(e)] += float(e["dur"])
    device = [e for e in complete if processes.get(e["pid"], "").startswith("/device:")]
    if device:
        ops = [e for e in device if "xla ops" in line(e).lower().rsplit(" / ", 1)[-1]]
        if ops:
            return "device ops", ops, dict(lines)
        kernels = [
            e for e in device if not any(s in line(e).lower() for s in SUMMARY_LINES)
        ]  # fmt: skip
        return "device kernels", kernels, dict(lines)
    cpu = [
        e
        for e in complete
        if any(t in threads.get((e["pid"], e.get("tid")), "").lower() for t in CPU_THREADS)
    ]
    return "cpu threads", cpu, dict(lines)


def summarize(events: list[dict], steps: int = 1, top: int = 15) -> dict:
    """Device time per step, by kind and by operation.

    Args:
      events: the trace's events (:func:`load_events`).
      steps: how many steps the trace holds (the totals are divided by it).
      top: how many operations to list.

    Returns:
      ``{"source", "steps", "ms_per_step", "busy_ms_per_step", "span_ms_per_step",
      "by_kind": [{kind, ms_per_step, share}],
      "top_ops": [{name, kind, calls_per_step, ms_per_step, share}], "lines": {name: ms}}``,
      kinds and operations sorted by time, shares of the summed device time.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    source, ops, lines = operation_events(events)
    by_name: dict[str, list[float]] = collections.defaultdict(list)
    for e, own in zip(ops, self_times(ops)):
        by_name[str(e.get("name", "?"))].append(own)
    by_name = {name: d for name, d in by_name.items() if sum(d) > 0}  # e.g. a loop's wrapper
    total_us = sum(sum(d) for d in by_name.values())
    busy_us, span_us = busy_and_span(ops)
    by_kind: dict[str, float] = collections.defaultdict(float)
    for name, durations in by_name.items():
        by_kind[kind_of(name)] += sum(durations)

    def share(us: float) -> float:
        return us / total_us if total_us else 0.0

    ranked = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))
    return {
        "source": source,
        "steps": steps,
        "ms_per_step": total_us / 1000 / steps,
        "busy_ms_per_step": busy_us / 1000 / steps,
        "span_ms_per_step": span_us / 1000 / steps,
        "by_kind": [
            {"kind": k, "ms_per_step": us / 1000 / steps, "share": share(us)}
            for k, us in sorted(by_kind.items(), key=lambda kv: -kv[1])
        ],
        "top_ops": [
            {
                "name": name,
                "kind": kind_of(name),
                "calls_per_step": len(durations) / steps,
                "ms_per_step": sum(durations) / 1000 / steps,
                "share": share(sum(durations)),
            }
            for name, durations in ranked[:top]
        ],
        "lines": {k: v / 1000 for k, v in sorted(lines.items(), key=lambda kv: -kv[1])},
    }


def markdown(summary: dict, title: str = "") -> str:
    """The summary as two Markdown tables (by kind, then the top operations)."""
    out = [f"### {title}", ""] if title else []
    out += [
        f"{summary['source']}: {summary['ms_per_step']:.2f} ms of device time per step "
        f"(summed over streams, {summary['steps']} steps traced); busy "
        f"{summary['busy_ms_per_step']:.2f} ms per step of a span of "
        f"{summary['span_ms_per_step']:.2f} (first start to last end, over steps)",
        "",
        "| kind | ms/step | share |",
        "|---|---|---|",
    ]
    out += [
        f"| {k['kind']} | {k['ms_per_step']:.2f} | {100 * k['share']:.1f}% |"
        for k in summary["by_kind"]
    ]
    out += ["", "| operation | kind | calls/step | ms/step | share |", "|---|---|---|---|---|"]
    for op in summary["top_ops"]:
        name = op["name"] if len(op["name"]) <= 70 else op["name"][:67] + "..."
        out.append(
            f"| `{name}` | {op['kind']} | {op['calls_per_step']:g} | "
            f"{op['ms_per_step']:.3f} | {100 * op['share']:.1f}% |"
        )
    return "\n".join(out) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace_dir", help="the log_dir given to jax.profiler.trace")
    parser.add_argument("--steps", type=int, default=1, help="steps in the trace")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    summary = summarize(load_events(find_trace(args.trace_dir)), args.steps, args.top)
    print(markdown(summary))
    return summary


if __name__ == "__main__":
    main()
