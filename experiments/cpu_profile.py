"""Where rest_jax's step spends its time on a CPU: cost analysis, CPU time and a per-op profile.

    python -m experiments.cpu_profile --preset small --method tcr --batch-size 64 \
        --gallery 5000 --batches 20 --out OUT_DIR

Builds one row of experiments/bench_gpu/ (same tower, gallery, inputs and compiled step,
image queries, fp32) and reports:

- XLA's ``compiled.cost_analysis()``: FLOPs, bytes accessed, transcendentals. XLA counts a
  ``lax.scan`` body once (a batch runs it ``steps`` times) and both branches of a ``lax.cond``;
- wall and process CPU time per batch (best of ``--repeats`` loops of ``--batches``); on a
  shared machine the CPU time moves less than the wall time;
- a ``jax.profiler`` trace of ``--batches`` batches. Each HLO operation's time per batch is
  the **median** of its calls' self times times its calls per batch: a call that the OS
  preempted (a busy machine) lasts longer but does not move the median. The operations are
  grouped by the JAX code they come from (their ``op_name`` in the compiled HLO): the tower's
  forward and backward inside the adaptation scan, the gallery search, the losses, bank and
  optimiser, and what runs after the scan (answer, guards).

Writes ``OUT/cpu_profile.md`` and ``OUT/cpu_profile.json`` (and the trace under
``OUT/trace``) when ``--out`` is given; prints the Markdown.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import time
from pathlib import Path

from experiments import bench_gpu, trace_summary

# First match wins, on an operation's op_name (the JAX call stack XLA keeps as metadata).
GROUPS: tuple[tuple[str, str], ...] = (
    ("tower backward", r"/while/.*transpose\(jvp\((Vision|Text)Tower"),
    ("tower forward", r"/while/.*(Vision|Text)Tower"),
    ("gallery search (scores, top-K)", r"/while/.*(top_k|jvp\(\)/dot_general)"),
    ("losses, bank, optimiser", r"/while/"),
    ("re-encode branch (rollback)", r"(Vision|Text)Tower"),
    ("answer, guards, rollback checks", r"."),
)


def op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> its ``op_name`` metadata (the first definition of a name)."""
    names: dict[str, str] = {}
    pattern = re.compile(r'^\s+(?:ROOT )?%([\w.\-]+) = .*?op_name="([^"]+)"')
    for line in hlo_text.splitlines():
        match = pattern.match(line)
        if match and match.group(1) not in names:
            names[match.group(1)] = match.group(2)
    return names


def group_of(op_name: str | None) -> str:
    """The group of an operation by its op_name (None: XLA's runtime, no HLO instruction)."""
    if not op_name:
        return "XLA runtime (thunk executor, copies)"
    for group, pattern in GROUPS:
        if re.search(pattern, op_name):
            return group
    return "answer, guards, rollback checks"


def profile_ops(events: list[dict], names: dict[str, str], batches: int) -> dict:
    """Per-op and per-group milliseconds per batch, from medians and from sums of calls."""
    _, ops, _ = trace_summary.operation_events(events)
    calls: dict[str, list[float]] = collections.defaultdict(list)
    for event, own in zip(ops, trace_summary.self_times(ops)):
        calls[str(event.get("name", "?"))].append(own)
    rows = []
    for name, durations in calls.items():
        op_name = names.get(name)
        rows.append(
            {
                "name": name,
                "group": group_of(op_name),
                "op_name": op_name or "",
                "calls_per_batch": len(durations) / batches,
                "median_us": statistics.median(durations),
                "ms_per_batch": statistics.median(durations) * len(durations) / batches / 1000,
                "sum_ms_per_batch": sum(durations) / batches / 1000,
            }
        )
    rows.sort(key=lambda r: -r["ms_per_batch"])
    groups: dict[str, dict] = {}
    for r in rows:
        g = groups.setdefault(r["group"], {"group": r["group"], "ms_per_batch": 0.0, "ops": 0})
        g["ms_per_batch"] += r["ms_per_batch"]
        g["ops"] += r["calls_per_batch"]
    total = sum(r["ms_per_batch"] for r in rows)
    return {
        "median_ms_per_batch": total,
        "sum_ms_per_batch": sum(r["sum_ms_per_batch"] for r in rows),
        "groups": sorted(groups.values(), key=lambda g: -g["ms_per_batch"]),
        "ops": rows,
    }


def run(args) -> dict:
    import jax

    bench_args = bench_gpu.parse_args(
        [
            "--preset", args.preset, "--framework", "jax", "--methods", args.method,
            "--modalities", args.modality, "--batch-sizes", str(args.batch_size),
            "--galleries", str(args.gallery), "--precisions", "fp32",
        ]
    )  # fmt: skip
    bench = bench_gpu.JaxBench(bench_args)
    row = bench_gpu.Row("jax", args.modality, args.batch_size, args.gallery, args.method, "fp32")
    prepared = bench.prepare(row)
    compiled, adapter, batches = prepared["compiled"], prepared["adapter"], prepared["batches"]
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    live = {"state": prepared["state"]}

    def run_batches(n: int) -> None:
        for i in range(n):
            live["state"], live["out"] = compiled(
                live["state"], batches[i % len(batches)], adapter.constants
            )
        jax.block_until_ready(live)

    run_batches(2)
    wall, cpu = [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run_batches(args.batches)
        wall.append((time.perf_counter() - start) / args.batches * 1000)
        cpu.append((time.process_time() - start_cpu) / args.batches * 1000)

    trace_dir = Path(args.out) / "trace" if args.out else Path("/tmp/rest_jax_cpu_profile")
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        run_batches(args.batches)
    events = trace_summary.load_events(trace_summary.find_trace(trace_dir))
    profile = profile_ops(events, op_names(compiled.as_text()), args.batches)
    return {
        "row": {**vars(args), "steps": adapter.config.steps},
        "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}",
        "cost_analysis": {
            k: float(cost[k]) for k in ("flops", "bytes accessed", "transcendentals") if k in cost
        },
        "compile_s": prepared["compile_s"],
        "wall_ms_per_batch": wall,
        "cpu_ms_per_batch": cpu,
        **profile,
    }


def markdown(result: dict, top: int = 15) -> str:
    r, cost = result["row"], result["cost_analysis"]
    out = [
        f"### {r['preset']} {r['modality']} queries, {r['method']}, B={r['batch_size']}, "
        f"N={r['gallery']}, fp32 ({result['device']})",
        "",
        f"- XLA cost analysis of the compiled step (scan body counted once, a batch runs it "
        f"{r['steps']} times; both branches of a cond): {cost.get('flops', 0) / 1e6:.0f} MFLOP, "
        f"{cost.get('bytes accessed', 0) / 2**20:.0f} MiB accessed, "
        f"{cost.get('transcendentals', 0) / 1e3:.0f}k transcendentals",
        f"- per batch, best of {len(result['wall_ms_per_batch'])} loops of {r['batches']}: "
        f"wall {min(result['wall_ms_per_batch']):.1f} ms, process CPU time "
        f"{min(result['cpu_ms_per_batch']):.1f} ms (compile {result['compile_s']:.1f} s)",
        f"- traced {r['batches']} batches: {result['median_ms_per_batch']:.1f} ms per batch from "
        f"each op's median call (the plain sum of the calls: {result['sum_ms_per_batch']:.1f} ms;"
        " the difference is time the ops were preempted or slowed by the rest of the machine)",
        "",
        "| where | ms/batch (medians) | share | ops/batch |",
        "|---|---|---|---|",
    ]
    total = result["median_ms_per_batch"] or 1.0
    for g in result["groups"]:
        out.append(
            f"| {g['group']} | {g['ms_per_batch']:.2f} | {100 * g['ms_per_batch'] / total:.0f}% "
            f"| {g['ops']:.0f} |"
        )
    out += [
        "",
        "| operation | where | calls/batch | median us | ms/batch | op_name (end) |",
        "|---|---|---|---|---|---|",
    ]
    for op in result["ops"][:top]:
        tail = op["op_name"][-70:]
        out.append(
            f"| `{op['name']}` | {op['group']} | {op['calls_per_batch']:g} "
            f"| {op['median_us']:.0f} | {op['ms_per_batch']:.3f} | `{tail}` |"
        )
    return "\n".join(out) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(bench_gpu.PRESET_DEFAULTS))
    parser.add_argument("--method", default="tcr", choices=sorted(bench_gpu.VARIANTS))
    parser.add_argument("--modality", default="image", choices=("image", "text"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--gallery", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=20, help="per timed loop and traced")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="operations listed")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    result = run(args)
    text = markdown(result, args.top)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cpu_profile.md").write_text(text)
        (out / "cpu_profile.json").write_text(json.dumps(result, indent=1))
    print(text)
    return result


if __name__ == "__main__":
    main()
