"""The command line: arguments, and the run of every planned row."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

from experiments.bench_gpu.budget import Budget
from experiments.bench_gpu.grid import (
    JAX_PRECISIONS,
    PRESET_DEFAULTS,
    ROW_OPTIONS,
    VARIANTS,
    Row,
    plan,
    row_options,
)
from experiments.bench_gpu.jax_bench import JaxBench, topk_check
from experiments.bench_gpu.report import (
    best,
    describe,
    environment,
    load_results,
    markdown,
    print_row,
    row_key,
    save_results,
)
from experiments.bench_gpu.torch_bench import (
    TorchBench,
    resolve_torch_precisions,
    run_torch_child,
    torch_available,
)
from experiments.lists import comma_list


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench_gpu",
        description="Throughput of rest_jax's jitted adaptation step against an eager "
        "PyTorch TCR step.",
    )
    parser.add_argument("--preset", default="small", choices=sorted(PRESET_DEFAULTS))
    parser.add_argument("--framework", default="both", choices=("jax", "torch", "both"))
    parser.add_argument("--methods", default="tcr,rest,tent,source")
    parser.add_argument("--modalities", default="image,text")
    parser.add_argument("--batch-sizes", default=None, help="default: the preset's (64,256)")
    parser.add_argument(
        "--galleries", default=None, help="default: the preset's (vit-b16: 25000,1000000)"
    )
    parser.add_argument(
        "--precisions", default=None, help=f"of {JAX_PRECISIONS}; vit-b16: bf16,fp32,tf32"
    )
    parser.add_argument(
        "--tf32-methods", default=None, help="the methods tf32 rows are run for; vit-b16: tcr"
    )
    parser.add_argument("--torch-precisions", default=None, help="default: all on GPU, fp32 on CPU")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per row")
    parser.add_argument(
        "--attention",
        default=None,
        choices=("xla", "cudnn"),
        help="jax.nn.dot_product_attention implementation of the bf16 rest_jax rows "
        "(default: JAX's, i.e. XLA); recorded in the row's notes",
    )
    parser.add_argument(
        "--mesh",
        action="store_true",
        help="rest_jax rows on a 1-D mesh of every device: gallery split along N, batch along "
        "B (the multi-device code path, also on one device); recorded in the notes",
    )
    parser.add_argument(
        "--residual",
        default=None,
        choices=("bf16",),
        help="residual stream dtype of the bf16 rest_jax rows (default: float32); in the notes",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed loops; the fastest counts")
    parser.add_argument(
        "--profile-batches",
        type=int,
        default=0,
        help="after timing a rest_jax row, trace this many batches with jax.profiler into "
        "OUT/profiles/<row>/ and summarise where the device time goes (0: no trace)",
    )
    parser.add_argument("--distinct-batches", type=int, default=2)
    parser.add_argument("--source-pairs", type=int, default=None)
    parser.add_argument("--chunk-from", type=int, default=500_000, help="N from which to chunk")
    parser.add_argument("--chunk-size", type=int, default=65_536)
    parser.add_argument("--output-top-k", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=600.0, help="soft limit, all rows")
    parser.add_argument(
        "--torch-budget-s", type=float, default=120.0, help="torch's share with --framework both"
    )
    parser.add_argument("--row-budget-s", type=float, default=30.0, help="timed-loop limit")
    parser.add_argument("--out", default=None, help="folder for bench.json and bench.md")
    parser.add_argument(
        "--skip-done", action="store_true", help="leave out rows OUT/bench.json has measured"
    )
    parser.add_argument("--summarize", action="store_true", help="only rewrite OUT/bench.md")
    parser.add_argument(
        "--rest-ratio",
        action="store_true",
        help="only print rest/tent time in OUT/bench.json for the first modality, batch size, "
        "gallery and precision given (nan when either is missing)",
    )
    parser.add_argument(
        "--topk-check", action="store_true", help="only run topk_check (OUT/topk_check.json)"
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    defaults = PRESET_DEFAULTS[args.preset]
    args.methods = comma_list(args.methods)
    unknown = [m for m in args.methods if m not in VARIANTS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {sorted(VARIANTS)}")
    args.tf32_methods = comma_list(
        defaults["tf32_methods"] if args.tf32_methods is None else args.tf32_methods
    )
    args.modalities = comma_list(args.modalities)
    if any(m not in ("image", "text") for m in args.modalities):
        parser.error(f"modalities must be image and/or text, got {args.modalities}")
    args.batch_sizes = comma_list(args.batch_sizes or defaults["batch_sizes"], int)
    args.galleries = comma_list(args.galleries or defaults["galleries"], int)
    args.precisions = comma_list(args.precisions or defaults["precisions"])
    if any(p not in JAX_PRECISIONS for p in args.precisions):
        parser.error(f"precisions must be among {JAX_PRECISIONS}, got {args.precisions}")
    if args.source_pairs is None:
        args.source_pairs = defaults["source_pairs"]
    if min(args.batches, args.distinct_batches, args.repeats) < 1:
        parser.error("--batches, --distinct-batches and --repeats must be >= 1")
    return args


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out_dir = Path(args.out) if args.out else None
    if args.topk_check:
        records = topk_check()
        if out_dir:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "topk_check.json").write_text(json.dumps(records, indent=1))
        return {"topk_check": records}
    if args.rest_ratio:
        if out_dir is None:
            raise SystemExit("--rest-ratio needs --out")
        rows = load_results(out_dir / "bench.json")["rows"]
        row = Row(
            "jax", args.modalities[0], args.batch_sizes[0], args.galleries[0], "rest",
            args.precisions[0],
        )  # fmt: skip
        shape = {"preset": args.preset, **dataclasses.asdict(row)}
        del shape["method"]
        options = row_options(row, args)  # compare rows run with the same options
        shape.update({k: options.get(k) for k in ROW_OPTIONS})
        rest, tent = best(rows, method="rest", **shape), best(rows, method="tent", **shape)
        print(f"{rest['ms_per_batch'] / tent['ms_per_batch']:.3f}" if rest and tent else "nan")
        return {"rest_ratio": shape}
    if args.summarize:
        if out_dir is None:
            raise SystemExit("--summarize needs --out")
        results = load_results(out_dir / "bench.json")
        save_results(out_dir, results)
        print(markdown(results))
        return results

    framework = args.framework
    missing_torch = torch_available() if framework in ("torch", "both") else None
    if missing_torch:
        raise SystemExit(
            f"--framework {framework} needs torch and transformers ({missing_torch}): "
            "pip install 'rest_jax[convert]', or run the rest_jax rows alone (--framework jax)"
        )
    budget_s = args.budget_s
    if framework == "both":
        if out_dir is None:
            raise SystemExit("--framework both needs --out (the two processes share it)")
        torch_args = argparse.Namespace(**vars(args))
        torch_args.framework = "torch"
        torch_args.torch_precisions = resolve_torch_precisions(args)
        start = time.perf_counter()
        run_torch_child(argv, args.torch_budget_s)
        budget_s = max(args.budget_s - (time.perf_counter() - start), 0.0)
        measured = {row_key(r) for r in load_results(out_dir / "bench.json")["rows"]}
        absent = [
            describe(dataclasses.asdict(row))
            for row in plan(torch_args)
            if row_key({"preset": args.preset, **dataclasses.asdict(row)}) not in measured
        ]
        if absent:
            raise SystemExit(f"the torch reference child left out rows: {'; '.join(absent)}")
        framework = "jax"
    results = load_results(out_dir / "bench.json") if out_dir else {"runs": [], "rows": []}
    args.framework = framework
    args.torch_precisions = resolve_torch_precisions(args) if framework == "torch" else []

    results["runs"].append(environment(args))
    budget = Budget(budget_s, args.row_budget_s)
    benches: dict[str, Any] = {}
    done = {row_key(r) for r in results["rows"] if r.get("status") == "ok"}
    failed = []
    for row in plan(args):
        record = {"preset": args.preset, **dataclasses.asdict(row)}
        record.update(row_options(row, args))
        if args.skip_done and row_key(record) in done:
            continue
        skip = budget.why_skip(row)
        if skip:
            record["status"] = skip
        else:
            started = time.perf_counter()
            try:
                if row.framework not in benches:
                    benches[row.framework] = (JaxBench if row.framework == "jax" else TorchBench)(
                        args
                    )
                record.update(benches[row.framework].run(row, budget))
                record["status"] = "ok"
            except Exception as error:  # one failing row (e.g. out of memory) is recorded
                record["status"] = f"error: {type(error).__name__}: {str(error)[:300]}"
                failed.append(record)
            budget.record(row, time.perf_counter() - started)
            gc.collect()
        print_row(record)
        # A row measured now replaces an earlier attempt of it that was skipped or failed.
        results["rows"] = [
            r for r in results["rows"] if r.get("status") == "ok" or row_key(r) != row_key(record)
        ]
        results["rows"].append(record)
        if out_dir:
            save_results(out_dir, results)
    print()
    print(markdown(results))
    if failed:  # the table has them; the exit status says so too
        raise SystemExit(
            f"{len(failed)} row(s) failed: "
            + "; ".join(f"{describe(r)}: {r['status']}" for r in failed)
        )
    return results
