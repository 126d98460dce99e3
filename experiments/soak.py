"""Soak run: thousands of batches through a tiny model; memory must stay flat.

    python -m experiments.soak --preset rest --batches 5000
    python -m experiments.soak --preset tcr --batches 5000 --checkpoint-dir /tmp/soak_ckpt

A random MLP+LayerNorm encoder (the toy shape of the tests) embeds a gallery of a few hundred
items; an endless seeded stream brings shifted queries, with a NaN batch and an all-constant
batch every ``--bad-every`` batches. The loop keeps only per-batch metrics
(``keep="metrics"``). The script records the process's resident memory (current VmRSS and
peak ru_maxrss) and the number of live JAX arrays after the warm-up, every
``--report-every`` batches and at the end, and prints them as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

import rest_jax
from experiments.demo import encoder


def rss_mib() -> float:
    """Current resident set size (VmRSS) of this process, MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss, KiB on Linux), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def kept_bytes(result) -> int:
    """Bytes of the per-batch arrays the loop kept (what memory is allowed to grow by)."""
    arrays = [result.rolled_back, result.reset]
    arrays += list(result.metrics.values()) + list(result.batch_metrics.values())
    return sum(a.nbytes for a in arrays)


def make_problem(seed: int, d_in: int, width: int, dim: int, gallery_size: int):
    rng = np.random.default_rng(seed)
    params = {
        "embed": jnp.asarray(rng.normal(size=(d_in, width)) / np.sqrt(d_in), jnp.float32),
        "ln": {"scale": jnp.ones(width), "bias": jnp.zeros(width)},
        "head": jnp.asarray(rng.normal(size=(width, dim)) / np.sqrt(width), jnp.float32),
    }
    clean = rng.normal(size=(gallery_size, d_in)).astype(np.float32)
    gallery = np.asarray(encoder(params, clean))
    return params, clean, gallery


def endless_stream(clean, batch_size: int, num_batches: int, bad_every: int, seed: int):
    """Shifted queries of random gallery items; a NaN and a constant batch every bad_every."""
    rng = np.random.default_rng(seed)
    d_in = clean.shape[1]
    for index in range(num_batches):
        if bad_every and index % bad_every == bad_every - 1:
            x = np.full((batch_size, d_in), np.nan, np.float32)
        elif bad_every and index % bad_every == bad_every - 2:
            x = np.full((batch_size, d_in), 0.5, np.float32)
        else:
            picks = rng.integers(0, clean.shape[0], batch_size)
            noise = rng.normal(size=(batch_size, d_in))
            x = (1.8 * clean[picks] + 0.9 + 0.6 * noise).astype(np.float32)
        yield {"inputs": x, "mask": np.ones(batch_size, bool)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="rest")
    parser.add_argument("--batches", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--gallery", type=int, default=300)
    parser.add_argument("--report-every", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--bad-every", type=int, default=500)
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)

    report = {"args": vars(args), "at_import": {"rss_mib": rss_mib(), "peak_mib": peak_rss_mib()}}
    params, clean, gallery = make_problem(args.seed, 16, 32, 16, args.gallery)
    adapter = rest_jax.Adapter.create(
        encoder,
        params,
        gallery,
        config=rest_jax.preset(args.preset),
        source=(clean[:64], gallery[:64]),
        seed=args.seed,
    )
    samples = []
    started = time.perf_counter()

    def on_batch(index, _):
        done = index + 1
        if done == args.warmup or done % args.report_every == 0:
            samples.append(
                {
                    "batches": done,
                    "rss_mib": round(rss_mib(), 1),
                    "peak_mib": round(peak_rss_mib(), 1),
                    "live_arrays": len(jax.live_arrays()),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(json.dumps(samples[-1]), flush=True)

    result = rest_jax.run_stream(
        adapter,
        endless_stream(clean, args.batch_size, args.batches, args.bad_every, args.seed),
        keep="metrics",
        on_batch=on_batch,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
    )
    state = result.final_state
    report["samples"] = samples
    report["end"] = {
        "rss_mib": round(rss_mib(), 1),
        "peak_mib": round(peak_rss_mib(), 1),
        "live_arrays": len(jax.live_arrays()),
        "seconds": round(time.perf_counter() - started, 1),
        "num_batches": len(result.rolled_back),
        "num_rollbacks": int(state.num_rollbacks),
        "num_nonfinite_rows": int(state.num_nonfinite_rows),
        "num_collapse_resets": int(state.num_collapse_resets),
        "finite_state": bool(rest_jax.step.all_finite(state)),
        "final_loss": float(result.metrics["loss"][-1, -1]),
        "compilations": adapter.step_fn._cache_size(),
        "kept_mib": round(kept_bytes(result) / 2**20, 2),
    }
    first = samples[0]
    report["growth_after_warmup_mib"] = {
        "rss": round(report["end"]["rss_mib"] - first["rss_mib"], 1),
        "peak": round(report["end"]["peak_mib"] - first["peak_mib"], 1),
    }
    print(json.dumps(report["end"]))
    print(json.dumps(report["growth_after_warmup_mib"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
