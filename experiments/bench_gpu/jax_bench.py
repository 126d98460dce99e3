"""The rest_jax rows: an Adapter on random CLIP towers, its jitted step timed (and the
chunked / sharded top-K check)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.bench_gpu.budget import Budget, executable_bytes, jax_peak_bytes, measure
from experiments.bench_gpu.grid import (
    JAX_PRECISIONS,
    MIB,
    SEEDS,
    VARIANTS,
    Row,
    clip_config,
    random_token_ids,
    row_options,
)


class JaxBench:
    """Builds and caches what the rest_jax rows share (tower params, galleries, inputs)."""

    def __init__(self, args):
        import jax

        self.jax = jax
        self.args = args
        self.cfg = clip_config(args.preset)
        self._params: dict[str, Any] = {}
        self._galleries: dict[int, Any] = {}
        self._inputs: dict[tuple, list] = {}

    def tower(self, modality: str):
        from rest_jax.models import TextTower, VisionTower

        jax, jnp = self.jax, self.jax.numpy
        if modality not in self._params:
            cfg = self.cfg
            if modality == "image":
                module = VisionTower(cfg.vision, cfg.projection_dim)
                size = cfg.vision.image_size
                dummy = jnp.zeros((1, size, size, cfg.vision.num_channels), jnp.float32)
            else:
                module = TextTower(cfg.text, cfg.projection_dim)
                dummy = jnp.zeros((1, cfg.text.max_position_embeddings), jnp.int32)
            params = jax.jit(module.init)(jax.random.PRNGKey(SEEDS["params"]), dummy)["params"]
            self._params[modality] = jax.block_until_ready(params)
        return self._params[modality]

    def gallery(self, n: int):
        jax = self.jax
        if n not in self._galleries:
            self._galleries.clear()  # one large gallery at a time

            @jax.jit
            def make(key):
                g = jax.random.normal(key, (n, self.cfg.projection_dim), jax.numpy.float32)
                return g / jax.numpy.linalg.norm(g, axis=1, keepdims=True)

            self._galleries[n] = jax.block_until_ready(make(jax.random.PRNGKey(SEEDS["gallery"])))
        return self._galleries[n]

    def inputs(self, modality: str, batch_size: int) -> list:
        """``args.distinct_batches`` device-resident batches of queries."""
        jax = self.jax
        key = (modality, batch_size)
        if key not in self._inputs:
            self._inputs.clear()
            cfg, batches = self.cfg, []
            for i in range(self.args.distinct_batches):
                if modality == "image":
                    size = cfg.vision.image_size
                    shape = (batch_size, size, size, cfg.vision.num_channels)
                    x = jax.random.normal(
                        jax.random.PRNGKey(SEEDS["batches"] + i), shape, jax.numpy.float32
                    )
                else:
                    x = jax.numpy.asarray(random_token_ids(cfg, batch_size, SEEDS["batches"] + i))
                batches.append(jax.block_until_ready(x))
            self._inputs[key] = batches
        return self._inputs[key]

    def config(self, row: Row):
        import rest_jax

        preset, overrides = VARIANTS[row.method]
        overrides = dict(overrides)
        overrides.update(large_gallery_overrides(row.gallery_size, self.args))
        return rest_jax.preset(preset, **overrides), overrides

    def prepare(self, row: Row) -> dict:
        """The row's adapter, device-resident batches, initial state and compiled step:
        ``{"adapter", "batches", "state", "compiled", "setup_s", "compile_s", "overrides"}``."""
        import rest_jax
        from rest_jax.models import (
            CLIP_IMAGE_ADAPT_RULES,
            CLIP_TEXT_ADAPT_RULES,
            image_encoder,
            text_encoder,
        )

        jax, jnp = self.jax, self.jax.numpy
        dtype = jnp.bfloat16 if row.precision == "bf16" else jnp.float32
        options = row_options(row, self.args)
        residual = jnp.bfloat16 if options.get("residual") == "bf16" else jnp.float32
        make_encoder, rules = {
            "image": (image_encoder, CLIP_IMAGE_ADAPT_RULES),
            "text": (text_encoder, CLIP_TEXT_ADAPT_RULES),
        }[row.modality]
        encoder = make_encoder(self.cfg, dtype, options.get("attention"), residual)
        config, overrides = self.config(row)
        params = self.tower(row.modality)
        gallery = self.gallery(row.gallery_size)
        xs = self.inputs(row.modality, row.batch_size)
        source = None
        if config.decoupling:
            k = min(self.args.source_pairs, row.batch_size)
            source = (xs[0][:k], gallery[:k])

        mesh = None
        if options.get("mesh"):
            from rest_jax.retrieval import gallery_mesh

            mesh = gallery_mesh()
        setup_start = time.perf_counter()
        adapter = rest_jax.Adapter.create(
            encoder, params, gallery, config=config, rules=rules, source=source, mesh=mesh
        )
        mask = jnp.ones((row.batch_size,), bool)
        batches = [adapter.place({"inputs": x, "mask": mask}) for x in xs]
        state = adapter.init_state()
        jax.block_until_ready(state)
        setup_s = time.perf_counter() - setup_start

        with precision_scope(jax, row.precision):
            start = time.perf_counter()
            compiled = adapter.step_fn.lower(state, batches[0], adapter.constants).compile()
            compile_s = time.perf_counter() - start
        return {
            "adapter": adapter,
            "batches": batches,
            "state": state,
            "compiled": compiled,
            "setup_s": setup_s,
            "compile_s": compile_s,
            "overrides": overrides,
        }

    def run(self, row: Row, budget: Budget) -> dict:
        jax, jnp = self.jax, self.jax.numpy
        prepared = self.prepare(row)
        adapter, batches, compiled = (prepared[k] for k in ("adapter", "batches", "compiled"))
        compile_s = prepared["compile_s"]
        start = time.perf_counter()
        state, out = compiled(prepared.pop("state"), batches[0], adapter.constants)
        jax.block_until_ready((state, out))
        first_call_s = compile_s + time.perf_counter() - start
        live = {"state": state, "out": out}

        def run_batch(i):
            live["state"], live["out"] = compiled(
                live["state"], batches[i % len(batches)], adapter.constants
            )

        per_batch, n, how, cpu_per_batch = measure(
            run_batch,
            lambda: jax.block_until_ready(live),
            first_call_s - compile_s,
            self.args,
            budget.row_s,
        )
        try:
            profile = self.profile(row, run_batch, lambda: jax.block_until_ready(live))
        except Exception as error:  # a failed trace (e.g. no CUPTI) keeps the row's timing
            profile = {"error": f"{type(error).__name__}: {str(error)[:200]}"}
        state, out = live.pop("state"), live.pop("out")

        peak, peak_kind = jax_peak_bytes()
        step_bytes = executable_bytes(compiled)
        finite = all(
            bool(jnp.all(jnp.isfinite(leaf)))
            for leaf in jax.tree.leaves((out.scores, out.top_scores))
            if jnp.issubdtype(leaf.dtype, jnp.floating)
        )
        live.clear()
        return {
            "queries_per_s": row.batch_size / per_batch,
            "ms_per_batch": 1000 * per_batch,
            "cpu_ms_per_batch": None if cpu_per_batch is None else 1000 * cpu_per_batch,
            "batches_timed": n,
            "timing": how,
            "compile_s": compile_s,
            "first_call_s": first_call_s,
            "setup_s": prepared["setup_s"],
            "peak_mib": peak / MIB,
            "peak_kind": peak_kind,
            "step_mib": None if step_bytes is None else step_bytes / MIB,
            "overrides": prepared["overrides"],
            "scores_finite": finite,
            **({"profile": profile} if profile else {}),
        }

    def profile(self, row: Row, run_batch: Callable, sync: Callable) -> dict | None:
        """Traces ``--profile-batches`` more batches into OUT/profiles/<row>/ (a Perfetto
        trace and its summary.md, see experiments/trace_summary.py); returns the summary's
        totals by kind, or None when not asked."""
        n = self.args.profile_batches
        if not n or not self.args.out:
            return None
        from experiments import trace_summary

        options = "".join(f"-{v}" for v in row_options(row, self.args).values())
        name = f"{row.modality}-b{row.batch_size}-n{row.gallery_size}-{row.method}-{row.precision}"
        trace_dir = Path(self.args.out) / "profiles" / (name + options)
        with self.jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
            for i in range(n):
                run_batch(i)
            sync()
        events = trace_summary.load_events(trace_summary.find_trace(trace_dir))
        summary = trace_summary.summarize(events, steps=n)
        (trace_dir / "summary.md").write_text(trace_summary.markdown(summary, name + options))
        (trace_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        keys = ("source", "ms_per_step", "busy_ms_per_step", "span_ms_per_step", "by_kind")
        return {k: summary[k] for k in keys}


def precision_scope(jax, precision: str):
    """Matmul precision of the trace: fp32 = "highest", tf32 = "tensorfloat32", bf16 = default
    (the bf16 tower sets its own dtype; the float32 rest, e.g. gallery scoring, runs at the
    backend's default)."""
    if precision not in JAX_PRECISIONS:
        raise ValueError(f"precision must be one of {JAX_PRECISIONS}, got {precision!r}")
    name = {"fp32": "highest", "tf32": "tensorfloat32", "bf16": None}[precision]
    if name is None:
        import contextlib

        return contextlib.nullcontext()
    return jax.default_matmul_precision(name)


def large_gallery_overrides(gallery_size: int, args) -> dict[str, Any]:
    """From ``--chunk-from`` items on: chunked gallery search and a top-K answer (the (B, N)
    score matrix is then formed only by the baselines' whole-gallery losses)."""
    if gallery_size < args.chunk_from:
        return {}
    out: dict[str, Any] = {}
    if args.chunk_size:
        out["gallery_chunk_size"] = args.chunk_size
    if args.output_top_k:
        out["output_top_k"] = args.output_top_k
    return out


def topk_check(shapes=None, k: int = 4, d: int = 512) -> list[dict]:
    """Does a top-K whose indices are used twice (``top[:, 0]`` and all of ``top``, as REST's
    refinement does) stay a TopK inside a gradient, or become a full (B, N) sort?

    Times ``grad`` of a small loss built that way ("two_slices") against the same loss with
    the positives read from the flattened candidates ("one_slice"), and reports whether the
    compiled program holds a sort over N. On XLA:CPU the first one sorts every row.
    """
    import jax
    import jax.numpy as jnp

    if shapes is None:  # the 1M case takes minutes on a CPU
        cpu = jax.default_backend() == "cpu"
        shapes = ((64, 25_000),) if cpu else ((64, 25_000), (256, 1_000_000))

    def loss(q, g, one_slice):
        top = jax.lax.top_k(jax.lax.stop_gradient(q @ g.T), k)[1]
        flat = top.T.reshape(-1)
        positive = flat[: q.shape[0]] if one_slice else top[:, 0]
        return jnp.sum(q * g[positive]) + jnp.sum(q @ g[flat].T)

    records = []
    for b, n in shapes:
        q = jax.random.normal(jax.random.PRNGKey(0), (b, d))
        g = jax.random.normal(jax.random.PRNGKey(1), (n, d))
        for one_slice in (False, True):
            step = jax.jit(jax.grad(lambda q, g, o=one_slice: loss(q, g, o)))
            compiled = step.lower(q, g).compile()
            text = compiled.as_text()
            sorts = any(" sort(" in line and f",{n}]" in line for line in text.splitlines())
            jax.block_until_ready(compiled(q, g))
            start = time.perf_counter()
            for _ in range(5):
                out = compiled(q, g)
            jax.block_until_ready(out)
            records.append(
                {
                    "batch_size": b,
                    "gallery_size": n,
                    "k": k,
                    "indices": "one_slice" if one_slice else "two_slices",
                    "ms": 1000 * (time.perf_counter() - start) / 5,
                    "full_sort_in_hlo": sorts,
                    "device": jax.devices()[0].device_kind,
                }
            )
            print(records[-1], flush=True)
    return records
