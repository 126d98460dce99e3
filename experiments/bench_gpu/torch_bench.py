"""The eager PyTorch rows (experiments/torch_reference.py), run in a child process when
both frameworks are asked for."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from experiments.bench_gpu.budget import Budget, max_rss_bytes, measure
from experiments.bench_gpu.grid import (
    MIB,
    SEEDS,
    TORCH_PRECISIONS,
    Row,
    clip_config,
    random_token_ids,
)
from experiments.lists import comma_list


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
    precisions = text if isinstance(text, list) else comma_list(text)
    if any(p not in TORCH_PRECISIONS for p in precisions):
        raise SystemExit(f"torch precisions must be among {TORCH_PRECISIONS}, got {precisions}")
    return precisions
