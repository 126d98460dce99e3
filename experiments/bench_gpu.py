"""Throughput of rest_jax's jitted adaptation step against an eager PyTorch TCR step.

    python -m experiments.bench_gpu --preset vit-b16 --out OUT_DIR   # GPU, see gpu_check.sh
    python -m experiments.bench_gpu --preset small --out OUT_DIR     # tiny towers, CPU-sized
    python -m experiments.bench_gpu --preset world --out OUT_DIR     # the default source model

For each row of the grid (query modality x batch size B x gallery size N x method x
precision), in priority order (gallery, then modality, then batch size; see :func:`plan`):

- rest_jax: the query tower of a random CLIP (no download; ``--preset vit-b16`` has the real
  ViT-B/16 and text tower shapes) adapts online against a random L2-normalised (N, d)
  gallery through ``Adapter.create(...)``; its jitted step is compiled ahead of time
  (``compile_s`` = ``step_fn.lower(...).compile()``), run once (``first_call_s`` = compile
  plus that first run), once more to estimate the per-batch time, then ``batches`` times with
  one ``block_until_ready`` at the end: queries/s = B * batches / time. Host-side input
  checks (``Adapter.check``) are outside the timing; the inputs already sit on the device.
- torch (when torch and transformers import): the eager TCR step of
  ``experiments/torch_reference.py`` on Hugging Face ``CLIP*ModelWithProjection`` towers
  with random init, same shapes, same device, timed the same way (one synchronisation at
  the end). Precisions: fp32, tf32 and bf16 autocast on GPU; fp32 on CPU. With
  ``--framework both`` the torch rows run first in a child process: in one process with JAX
  the eager CPU step ran >10x slower (thread pools), and on GPU the two allocators would
  split the memory. A child that fails, or leaves out a torch row, fails the invocation.

Precisions of the rest_jax rows: ``fp32`` (float32, matmul precision "highest", no TF32),
``tf32`` (float32, "tensorfloat32") and ``bf16`` (the tower built with ``dtype=jnp.bfloat16``:
bfloat16 matmuls; LayerNorm, residual stream, gallery scores and losses in float32;
``--residual bf16`` keeps the residual stream in bfloat16, ``--attention cudnn`` uses the fused
attention kernel). ``--mesh`` runs the rest_jax rows on a mesh of every device (gallery split
along N, batch along B); ``--profile-batches N`` traces N more batches of each rest_jax row
(see experiments/trace_summary.py).
Galleries of ``--chunk-from`` items or more use ``gallery_chunk_size`` / ``output_top_k``
(chunked candidate search and a top-K answer instead of (B, N) scores).

Peak memory: rest_jax rows report the step executable's footprint from XLA (``step_mib``,
``compiled.memory_analysis()``) and the process peak so far (``peak_mib``: the device's
``peak_bytes_in_use``, or max RSS on CPU; it never goes down along a run); torch rows report
``torch.cuda.max_memory_allocated`` of the row (max RSS on CPU).

Time guards: the timed part of a row (after its first call) is capped at
``--row-budget-s`` (a row whose first run alone takes half of that is reported from that
run); a row is skipped once the invocation's ``--budget-s`` is spent, or when the cheapest
row already run in its group (same framework, modality, B, N) took longer than what is left.
Results are appended to ``OUT/bench.json`` after every row (invocations may share one OUT)
and the whole table, with the ratios, is rewritten to ``OUT/bench.md``. A row that fails is
recorded there with its error, and the invocation then exits non-zero (``SystemExit``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MIB = 2**20
JAX_PRECISIONS = ("fp32", "tf32", "bf16")
TORCH_PRECISIONS = ("fp32", "tf32", "bf16")
# Every random input is fixed by a seed (jax.random keys, torch generators, numpy for token
# ids): tower weights, gallery, and timed batch i from ``batches + i``. Recorded in bench.json.
SEEDS = {"params": 0, "gallery": 1, "batches": 100}
# Methods and ablation variants: name -> (preset, overrides).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "source": ("source", {}),
    "tent": ("tent", {}),
    "tcr": ("tcr", {}),
    "rest": ("rest", {}),
    "rest-con": ("rest", {"consistency_weight": 1.0}),
    "rest-nodecouple": ("rest", {"decoupling": False}),
    "rest-k1": ("rest", {"num_candidates": 1, "dedup": False}),
}
PRESET_DEFAULTS = {
    "vit-b16": dict(
        batch_sizes="64,256",
        galleries="25000,1000000",
        precisions="bf16,fp32,tf32",
        tf32_methods="tcr",
        source_pairs=32,
    ),
    # CPU-sized: fp32 only (tf32 does not exist on CPU), a 100k gallery in place of 1M.
    "small": dict(
        batch_sizes="64,256",
        galleries="25000,100000",
        precisions="fp32",
        tf32_methods="",
        source_pairs=16,
    ),
}
PRESET_DEFAULTS["world"] = PRESET_DEFAULTS["small"]  # CPU-sized too


# ----------------------------------------------------------------------------- the grid


@dataclasses.dataclass(frozen=True)
class Row:
    """One measurement: who runs what on which shapes."""

    framework: str  # "jax" or "torch"
    modality: str  # query modality: "image" or "text"
    batch_size: int
    gallery_size: int
    method: str
    precision: str

    @property
    def group(self) -> tuple:
        return (self.framework, self.modality, self.batch_size, self.gallery_size)


def parse_list(text: str, cast: Callable = str) -> list:
    return [cast(x) for x in text.split(",") if x.strip()]


def plan(args) -> list[Row]:
    """The rows of one framework in priority order: gallery size, then modality, then batch
    size; inside, rest_jax rows are precision-major with the methods in the order given."""
    rows = []
    for n in args.galleries:
        for modality in args.modalities:
            for b in args.batch_sizes:
                if args.framework == "torch":
                    rows += [Row("torch", modality, b, n, "tcr", p) for p in args.torch_precisions]
                    continue
                for precision in args.precisions:
                    rows += [
                        Row("jax", modality, b, n, m, precision)
                        for m in args.methods
                        if precision != "tf32" or m in args.tf32_methods
                    ]
    return rows


def clip_config(preset: str):
    """The model shapes of a preset."""
    from rest_jax.models import vit_b16
    from rest_jax.training import SourceModelConfig, world_clip_config

    if preset == "vit-b16":
        return vit_b16()
    if preset == "small":  # the SynthWorld source model's shapes, 16 text tokens
        towers = SourceModelConfig(width=64, layers=2, heads=4, patch_size=8, max_text_len=16)
        return world_clip_config(towers, image_size=32, vocab_size=1000, sot_id=998, eot_id=999)
    if preset == "world":  # the embedded default's shipped source model (its config.json)
        from rest_jax.models.hf import read_config
        from rest_jax.pretrained import WORLD_SOURCE_DIR

        return read_config(WORLD_SOURCE_DIR)
    raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESET_DEFAULTS)}")


def random_token_ids(cfg, batch_size: int, seed: int) -> np.ndarray:
    """(B, L) int32 ids: BOS, random tokens, an EOS at a random position in the second half.

    The random tokens are neither BOS nor EOS (the pooled position is the first EOS).
    """
    rng = np.random.default_rng(seed)
    length = cfg.text.max_position_embeddings
    vocab, special = cfg.text.vocab_size, (cfg.text.bos_token_id, cfg.text.eos_token_id)
    if sorted(special) == [vocab - 2, vocab - 1]:  # CLIP's layout: the ids drawn so far
        ids = rng.integers(1, vocab - 2, size=(batch_size, length))
    else:
        ids = rng.choice(np.setdiff1d(np.arange(1, vocab), special), size=(batch_size, length))
    ids[:, 0] = cfg.text.bos_token_id
    ids[np.arange(batch_size), rng.integers(length // 2, length, size=batch_size)] = (
        cfg.text.eos_token_id
    )
    return ids.astype(np.int32)


# ----------------------------------------------------------------------------- budgets


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


# ----------------------------------------------------------------------------- rest_jax rows


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
            for leaf in jax.tree.leaves((out.scores, out.top_values))
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


# ----------------------------------------------------------------------------- torch rows


class TorchBench:
    """The eager PyTorch reference rows (experiments/torch_reference.py)."""

    def __init__(self, args):
        import torch

        from experiments import torch_reference

        self.torch = torch
        self.ref = torch_reference
        self.args = args
        self.cfg = clip_config(args.preset)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._models: dict[str, tuple] = {}
        self._gallery: tuple[int, Any] | None = None

    def model(self, modality: str):
        """The tower and its initial state (restored before every row)."""
        if modality not in self._models:
            self._models.clear()
            model = self.ref.build_query_tower(
                self.cfg.to_hf_dict(), modality, seed=SEEDS["params"], device=self.device
            )
            initial = {k: v.clone() for k, v in model.state_dict().items()}
            self._models[modality] = (model, initial)
        model, initial = self._models[modality]
        model.load_state_dict(initial)
        return model

    def gallery(self, n: int):
        torch = self.torch
        if self._gallery is None or self._gallery[0] != n:
            self._gallery = None
            generator = torch.Generator(device=self.device).manual_seed(SEEDS["gallery"])
            g = torch.randn(n, self.cfg.projection_dim, device=self.device, generator=generator)
            self._gallery = (n, torch.nn.functional.normalize(g, dim=-1))
        return self._gallery[1]

    def inputs(self, modality: str, batch_size: int) -> list:
        torch, cfg = self.torch, self.cfg
        batches = []
        for i in range(self.args.distinct_batches):
            if modality == "image":
                size = cfg.vision.image_size
                generator = torch.Generator(device=self.device).manual_seed(SEEDS["batches"] + i)
                shape = (batch_size, cfg.vision.num_channels, size, size)
                batches.append(torch.randn(shape, device=self.device, generator=generator))
            else:
                ids = random_token_ids(cfg, batch_size, SEEDS["batches"] + i)
                batches.append(torch.from_numpy(ids).long().to(self.device))
        return batches

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def run(self, row: Row, budget: Budget) -> dict:
        torch, ref = self.torch, self.ref
        if self.device == "cpu" and row.precision != "fp32":
            raise ValueError("on CPU the torch reference runs in fp32 only")
        row_start = time.perf_counter()
        model = self.model(row.modality)
        optimizer = ref.make_optimizer(ref.adapt_layernorms(model))
        bank = ref.AnchorBank(64, self.cfg.projection_dim, device=self.device)
        gallery = self.gallery(row.gallery_size)
        xs = self.inputs(row.modality, row.batch_size)
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.sync()
        setup_s = time.perf_counter() - row_start
        index = 0

        last = {}

        def step(x):
            nonlocal index
            last["scores"], _ = ref.tcr_step_torch(
                model, optimizer, bank, x, gallery, batch_index=index, autocast_dtype=autocast
            )
            index += 1

        with ref.precision_mode(row.precision) as autocast:
            start = time.perf_counter()
            step(xs[0])
            self.sync()
            first_call_s = time.perf_counter() - start
            per_batch, n, how, cpu_per_batch = measure(
                lambda i: step(xs[i % len(xs)]),
                self.sync,
                first_call_s,
                self.args,
                budget.row_s,
            )
        if self.device == "cuda":
            peak, kind = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated (row)"
        else:
            peak, kind = max_rss_bytes(), "max RSS (process)"
        finite = bool(torch.isfinite(last.pop("scores")).all())
        if self.device == "cuda":
            torch.cuda.empty_cache()
        return {
            "queries_per_s": row.batch_size / per_batch,
            "ms_per_batch": 1000 * per_batch,
            "cpu_ms_per_batch": None if cpu_per_batch is None else 1000 * cpu_per_batch,
            "batches_timed": n,
            "timing": how,
            "compile_s": None,
            "first_call_s": first_call_s,
            "setup_s": setup_s,
            "peak_mib": peak / MIB,
            "peak_kind": kind,
            "step_mib": None,
            "overrides": {},
            "scores_finite": finite,
        }


# ----------------------------------------------------------------------------- top-K check


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


# ----------------------------------------------------------------------------- results


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
TOWER_OPTIONS = ("attention", "residual")
ROW_OPTIONS = (*TOWER_OPTIONS, "mesh")


def row_options(row: Row, args) -> dict[str, Any]:
    """The options a row runs with: ``--attention`` and ``--residual`` for bf16 rest_jax
    rows, ``--mesh`` (recorded as the mesh's device count) for every rest_jax row."""
    if row.framework != "jax":
        return {}
    options = {}
    if row.precision == "bf16":
        options = {k: getattr(args, k) for k in TOWER_OPTIONS if getattr(args, k) is not None}
    if args.mesh:
        import jax

        options["mesh"] = jax.device_count()
    return options


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


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    args.methods = parse_list(args.methods)
    unknown = [m for m in args.methods if m not in VARIANTS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {sorted(VARIANTS)}")
    args.tf32_methods = parse_list(
        defaults["tf32_methods"] if args.tf32_methods is None else args.tf32_methods
    )
    args.modalities = parse_list(args.modalities)
    if any(m not in ("image", "text") for m in args.modalities):
        parser.error(f"modalities must be image and/or text, got {args.modalities}")
    args.batch_sizes = parse_list(args.batch_sizes or defaults["batch_sizes"], int)
    args.galleries = parse_list(args.galleries or defaults["galleries"], int)
    args.precisions = parse_list(args.precisions or defaults["precisions"])
    if any(p not in JAX_PRECISIONS for p in args.precisions):
        parser.error(f"precisions must be among {JAX_PRECISIONS}, got {args.precisions}")
    if args.source_pairs is None:
        args.source_pairs = defaults["source_pairs"]
    if min(args.batches, args.distinct_batches, args.repeats) < 1:
        parser.error("--batches, --distinct-batches and --repeats must be >= 1")
    return args


def torch_available() -> str | None:
    """None when torch and transformers import, else the reason."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        return str(error)
    return None


def run_torch_child(argv: list[str], budget_s: float) -> None:
    """Runs the torch rows in a child process: sharing a process with JAX slows eager torch
    on CPU by an order of magnitude (thread pools) and splits GPU memory between allocators.

    The child gets this invocation's arguments with ``--framework torch --budget-s budget_s``
    appended (argparse keeps an option's last value, however the first was spelled). Its
    stdout passes through; a child that fails (it exits non-zero when a row of its own fails)
    raises ``SystemExit`` with the end of its stderr.
    """
    import subprocess

    child = [*argv, "--framework", "torch", "--budget-s", str(budget_s)]
    env = dict(os.environ)  # ``-m experiments.bench_gpu`` from any working directory
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    print(f"torch reference in a child process (budget {budget_s:.0f} s)", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.bench_gpu", *child],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or "no output on stderr"
        raise SystemExit(
            f"the torch reference child failed (exit status {proc.returncode}): {tail}"
        )


def resolve_torch_precisions(args) -> list[str]:
    """``--torch-precisions``, by default every precision on a GPU and fp32 on a CPU."""
    text = args.torch_precisions
    if text is None:
        import torch

        text = "fp32,tf32,bf16" if torch.cuda.is_available() else "fp32"
    precisions = text if isinstance(text, list) else parse_list(text)
    if any(p not in TORCH_PRECISIONS for p in precisions):
        raise SystemExit(f"torch precisions must be among {TORCH_PRECISIONS}, got {precisions}")
    return precisions


def describe(record: dict) -> str:
    """A row in a few words, for messages."""
    return (
        f"{record['framework']} {record['modality']} B={record['batch_size']} "
        f"N={record['gallery_size']} {record['method']} {record['precision']}"
    )


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


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Before torch loads OpenMP: spinning OpenMP workers made the eager CPU step ~30x slower
    # on a busy 2-core machine (no effect on GPU work).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
