"""Results of the benchmark: ``bench.json`` rows, the environment, and ``bench.md``."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

from experiments.bench_gpu.grid import (
    JAX_PRECISIONS,
    ROW_OPTIONS,
    SEEDS,
    TORCH_PRECISIONS,
    VARIANTS,
)


def environment(args) -> dict:
    """Versions and devices of this invocation (no backend is started for torch-only runs)."""
    info: dict[str, Any] = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "argv": args.argv,
        "framework": args.framework,
        "seeds": SEEDS,
    }
    if args.framework in ("jax", "both"):
        import jax

        info["jax"] = jax.__version__
        info["jax_device"] = f"{jax.devices()[0].device_kind} x{jax.device_count()}"
        info["jax_backend"] = jax.default_backend()
        # Compile times are warm where a cache already held a program or its autotuning.
        info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
        info["compilation_cache_dir"] = jax.config.jax_compilation_cache_dir
    if args.framework in ("torch", "both"):
        try:
            import torch
            import transformers

            info["torch"] = torch.__version__
            info["transformers"] = transformers.__version__
            info["torch_device"] = (
                torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
            )
        except ImportError as error:
            info["torch"] = f"unavailable ({error})"
    return info


# Options of the rest_jax rows (None: the default), recorded in each row: the tower options
# apply to bf16 rows only, the mesh to every rest_jax row.
def row_key(record: dict) -> tuple:
    """What identifies a measurement across invocations."""
    names = ("preset", "framework", "modality", "batch_size", "gallery_size", "method")
    return tuple(record.get(k) for k in (*names, "precision", *ROW_OPTIONS))


def load_results(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"runs": [], "rows": []}


def save_results(out_dir: Path, results: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "bench.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(out_dir / "bench.json")
    (out_dir / "bench.md").write_text(markdown(results))


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def best(records: list[dict], **where) -> dict | None:
    """The fastest measured record matching ``where``."""
    hits = [
        r
        for r in records
        if r.get("queries_per_s") and all(r.get(k) == v for k, v in where.items())
    ]
    return max(hits, key=lambda r: r["queries_per_s"]) if hits else None


def cpu_ratio(slow: dict, fast: dict) -> str:
    """`` (CPU time a / b ms = a/b)`` of two rows' process CPU time per batch, when both have it."""
    a, b = slow.get("cpu_ms_per_batch"), fast.get("cpu_ms_per_batch")
    if not a or not b:
        return ""
    return f" (CPU time {a:.1f} / {b:.1f} ms per batch = {a / b:.2f})"


def summary_lines(records: list[dict]) -> list[str]:
    """Speed-ups over the eager reference and REST's cost over tent, per shape."""
    lines = []
    keys = ("preset", "modality", "batch_size", "gallery_size")
    shapes = sorted(
        {tuple(r.get(k) for k in keys) for r in records},
        key=lambda s: (s[0] or "", s[1], s[2], s[3]),
    )
    for preset, modality, b, n in shapes:
        shape = dict(preset=preset, modality=modality, batch_size=b, gallery_size=n)
        head = f"- {preset or ''} {modality} queries, B={b}, N={n}:"
        parts = []
        torch_best = best(records, framework="torch", **shape)
        jax_best = best(records, framework="jax", method="tcr", **shape)
        if torch_best and jax_best:
            parts.append(
                f"tcr rest_jax best ({jax_best['precision']}, {jax_best['queries_per_s']:.0f} q/s)"
                f" / eager torch best ({torch_best['precision']}, "
                f"{torch_best['queries_per_s']:.0f} q/s) = "
                f"{jax_best['queries_per_s'] / torch_best['queries_per_s']:.2f}x"
                + cpu_ratio(torch_best, jax_best)
            )
            for p in TORCH_PRECISIONS:
                a = best(records, framework="jax", method="tcr", precision=p, **shape)
                t = best(records, framework="torch", precision=p, **shape)
                if a and t:
                    parts.append(f"{p}: {a['queries_per_s'] / t['queries_per_s']:.2f}x")
        rests = sorted({r["method"] for r in records if r["method"].startswith("rest")})
        for p in JAX_PRECISIONS:
            tent = best(records, framework="jax", method="tent", precision=p, **shape)
            for method in rests:
                rest = best(records, framework="jax", method=method, precision=p, **shape)
                if rest and tent:
                    ratio = rest["ms_per_batch"] / tent["ms_per_batch"]
                    parts.append(
                        f"{method}/tent time {p}: {ratio:.2f} ({100 * (ratio - 1):+.0f}%)"
                        + cpu_ratio(rest, tent)
                    )
        if parts:
            lines.append(head + " " + "; ".join(parts))
    return lines


def notes(record: dict) -> str:
    """Overrides (chunked large-gallery path), slow-row timing, non-finite scores."""
    parts = [f"{k}={v}" for k, v in (record.get("overrides") or {}).items()]
    parts += [f"{k}={record[k]}" for k in ROW_OPTIONS if record.get(k)]
    if record.get("timing") not in (None, "timed"):
        parts.append(record["timing"])
    if record.get("scores_finite") is False:
        parts.append("NON-FINITE scores")
    return ", ".join(parts)


def table_rows(records: list[dict]) -> list[dict]:
    """One record per measurement (its latest ok run, else its latest record), grouped by
    framework, query modality, gallery and batch size."""
    latest: dict[tuple, dict] = {}
    for r in records:
        key = row_key(r)
        if r.get("status") == "ok" or latest.get(key, {}).get("status") != "ok":
            latest[key] = r
    order = {name: i for i, name in enumerate(VARIANTS)}
    return sorted(
        latest.values(),
        key=lambda r: (
            r["framework"], r["modality"], r["gallery_size"], r["batch_size"],
            order.get(r["method"], len(order)), r["precision"],
        ),
    )  # fmt: skip


def markdown(results: dict) -> str:
    """The results table (all rows so far) and the summary ratios."""
    out = ["# rest_jax step throughput", ""]
    for run in results["runs"]:
        devices = ", ".join(
            f"{k}={run[k]}" for k in ("jax_device", "torch_device", "jax", "torch") if k in run
        )
        caches = [f"{k}=`{run[k]}`" for k in ("xla_flags", "compilation_cache_dir") if run.get(k)]
        out.append(
            f"- run {run['time']}: {devices}; args: `{' '.join(run['argv'])}`"
            + (f"; {', '.join(caches)}" if caches else "")
        )
    out += [
        "",
        "| framework | query | B | N | method | precision | queries/s | ms/batch | CPU ms/batch "
        "| compile s | first call s | setup s | peak MiB | step MiB | batches | status | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table_rows(results["rows"]):
        out.append(
            f"| {r['framework']} | {r['modality']} | {r['batch_size']} | {r['gallery_size']} "
            f"| {r['method']} | {r['precision']} | {_fmt(r.get('queries_per_s'))} "
            f"| {_fmt(r.get('ms_per_batch'), 2)} | {_fmt(r.get('cpu_ms_per_batch'), 2)} "
            f"| {_fmt(r.get('compile_s'))} "
            f"| {_fmt(r.get('first_call_s'))} | {_fmt(r.get('setup_s'))} "
            f"| {_fmt(r.get('peak_mib'), 0)} | {_fmt(r.get('step_mib'), 0)} "
            f"| {_fmt(r.get('batches_timed'))} | {r['status']} | {notes(r)} |"
        )
    lines = summary_lines(results["rows"])
    if lines:
        out += ["", "Ratios (same device, same shapes):", "", *lines]
    out += [
        "",
        "peak MiB: jax rows = process peak so far (device peak_bytes_in_use, or max RSS on CPU);"
        " torch rows = max_memory_allocated of the row (max RSS on CPU). step MiB: XLA's memory"
        " analysis of the compiled step. CPU ms/batch: the process's CPU time (all threads)"
        " per batch in the timed loop with the least of it.",
        "",
    ]
    return "\n".join(out)


def print_row(record: dict) -> None:
    print(
        f"[{record['framework']:5s}] {record['modality']:5s} B={record['batch_size']:<4d} "
        f"N={record['gallery_size']:<8d} {record['method']:16s} {record['precision']:4s} "
        f"{_fmt(record.get('queries_per_s')):>9s} q/s  compile {_fmt(record.get('compile_s'))} s"
        f"  first {_fmt(record.get('first_call_s'))} s  {record['status']}",
        flush=True,
    )


def describe(record: dict) -> str:
    """A row in a few words, for messages."""
    return (
        f"{record['framework']} {record['modality']} B={record['batch_size']} "
        f"N={record['gallery_size']} {record['method']} {record['precision']}"
    )
