#!/usr/bin/env bash
# Every GPU throughput measurement of rest_jax in one run (about 6 minutes on an H100).
#
#   OUT=/path/to/output bash experiments/gpu_check.sh
#
# Run from the repository root on a machine with jax[cuda], flax, optax, torch and
# transformers already installed; nothing is downloaded (PYTHONPATH, no pip). Writes, under $OUT:
#   bench.json, bench.md  the table (rows appended as they finish, so a cut run keeps them)
#   topk_check.json       whether REST's top-K survives as a TopK inside the gradient
#   log.txt               everything printed
# Order (most important first): torch reference rows, then rest_jax rows: image queries
# B=64 N=25k (source/tent/tcr/rest in fp32 and bf16, tcr in tf32), B=256, text queries, then
# N=1M. Each stage has a soft budget (rows that do not fit are recorded as skipped) and a
# hard timeout. Override the budgets with TORCH_BUDGET / JAX_BUDGET (seconds).
set -u

: "${OUT:?set OUT to an output folder}"
mkdir -p "$OUT"
LOG="$OUT/log.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch run one after the other
export TF_CPP_MIN_LOG_LEVEL=2
TORCH_BUDGET=${TORCH_BUDGET:-70}
JAX_BUDGET=${JAX_BUDGET:-220}
BENCH=(python -m experiments.bench_gpu --preset vit-b16 --out "$OUT")

stage() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }

# limit_s command...: runs a stage under a hard timeout, logging its exit status.
run_stage() {
  local limit=$1
  shift
  timeout --kill-after=15 "$limit" "$@" >>"$LOG" 2>&1
  local status=$?
  [ "$status" -eq 0 ] || stage "stage exited with status $status (124 = timed out)"
}

stage "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$LOG" 2>&1
run_stage 60 python -c "import jax, torch, transformers, flax, optax; \
print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, \
torch.cuda.get_device_name(0)); print('transformers', transformers.__version__)"

stage "top-K inside the gradient"
run_stage 90 "${BENCH[@]}" --topk-check

stage "eager torch reference (budget ${TORCH_BUDGET}s)"
run_stage $((TORCH_BUDGET + 45)) "${BENCH[@]}" --framework torch --batches 5 \
  --budget-s "$TORCH_BUDGET" --row-budget-s 15

stage "rest_jax (budget ${JAX_BUDGET}s)"
run_stage $((JAX_BUDGET + 90)) "${BENCH[@]}" --framework jax --batches 10 \
  --budget-s "$JAX_BUDGET" --row-budget-s 10

stage "summary"
"${BENCH[@]}" --summarize >/dev/null 2>>"$LOG"
cat "$OUT/topk_check.json" 2>/dev/null
cat "$OUT/bench.md"
