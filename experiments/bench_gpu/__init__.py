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

Modules: ``grid`` (constants, rows, inputs), ``budget`` (time budgets, timed loop, memory),
``jax_bench`` and ``torch_bench`` (the two frameworks' rows), ``report`` (``bench.json``,
``bench.md``) and ``cli`` (arguments, the run).
"""

from experiments.bench_gpu.cli import main, parse_args
from experiments.bench_gpu.grid import (
    PRESET_DEFAULTS,
    SEEDS,
    VARIANTS,
    Row,
    clip_config,
    random_token_ids,
)
from experiments.bench_gpu.jax_bench import JaxBench
from experiments.bench_gpu.report import markdown, notes, row_key, summary_lines

__all__ = [
    "PRESET_DEFAULTS",
    "SEEDS",
    "VARIANTS",
    "JaxBench",
    "Row",
    "clip_config",
    "main",
    "markdown",
    "notes",
    "parse_args",
    "random_token_ids",
    "row_key",
    "summary_lines",
]
