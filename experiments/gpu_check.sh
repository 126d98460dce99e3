#!/usr/bin/env bash
# Every GPU throughput measurement of rest_jax in one run (budgets sized for ~6 min on an H100).
#
#   OUT=/path/to/output bash experiments/gpu_check.sh
#
# Run from the repository root on a machine with jax[cuda], flax, optax, torch and
# transformers already installed; nothing is downloaded (PYTHONPATH, no pip). Writes, under $OUT:
#   bench.json, bench.md  the table (rows appended as they finish, so a cut run keeps them)
#   topk_check.json       whether REST's top-K survives as a TopK inside the gradient
#   log.txt               everything printed
# Order (most important first): torch reference rows, then rest_jax rows: image queries
# B=64 N=25k (tcr/rest/tent/source in bf16 then fp32, tcr in tf32); REST's ablations when REST
# costs over 10% more than tent there; then B=256, text queries, N=1M. Each stage has a soft
# budget (rows that do not fit are recorded as skipped) and a hard timeout. Override the budgets with TORCH_BUDGET / JAX_BUDGET (seconds); PRESET=small
# runs the same stages with tiny towers (a CPU smoke test of this script).
set -u

: "${OUT:?set OUT to an output folder}"
mkdir -p "$OUT"
LOG="$OUT/log.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch run one after the other
export TF_CPP_MIN_LOG_LEVEL=2
TORCH_BUDGET=${TORCH_BUDGET:-70}
JAX_BUDGET=${JAX_BUDGET:-240}
PRESET=${PRESET:-vit-b16}
BENCH=(python -m experiments.bench_gpu --preset "$PRESET" --out "$OUT")

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
torch.cuda.is_available() and torch.cuda.get_device_name(0)); \
print('transformers', transformers.__version__)"

stage "top-K inside the gradient"
run_stage 90 "${BENCH[@]}" --topk-check

stage "eager torch reference (budget ${TORCH_BUDGET}s)"
run_stage $((TORCH_BUDGET + 45)) "${BENCH[@]}" --framework torch --batches 5 \
  --budget-s "$TORCH_BUDGET" --row-budget-s 15

JAX_START=$SECONDS
FIRST=(--modalities image --batch-sizes 64 --galleries 25000)
HEAD_BUDGET=$((JAX_BUDGET * 5 / 8))
stage "rest_jax: image B=64 N=25k (${HEAD_BUDGET}s of ${JAX_BUDGET}s)"
run_stage $((HEAD_BUDGET + 90)) "${BENCH[@]}" --framework jax --batches 10 \
  --budget-s "$HEAD_BUDGET" --row-budget-s 10 "${FIRST[@]}"

# When REST costs over 10% more than tent there, time its ablations (which part costs what).
[ "$PRESET" = small ] && PRECISION=fp32 || PRECISION=bf16
RATIO=$("${BENCH[@]}" "${FIRST[@]}" --precisions "$PRECISION" --rest-ratio 2>>"$LOG")
stage "rest/tent time ($PRECISION, image B=64 N=25k): $RATIO"
if python -c "import sys; sys.exit(0 if float('$RATIO') > 1.1 else 1)" 2>/dev/null; then
  stage "REST ablations"
  run_stage $((JAX_BUDGET / 4 + 60)) "${BENCH[@]}" --framework jax --batches 10 \
    --budget-s $((JAX_BUDGET / 4)) --row-budget-s 10 "${FIRST[@]}" --precisions "$PRECISION" \
    --methods rest-k1,rest-nodecouple,rest-nocon
fi

LEFT=$((JAX_BUDGET - (SECONDS - JAX_START)))
stage "rest_jax: the other shapes (${LEFT}s left)"
if [ "$LEFT" -gt 20 ]; then
  run_stage $((LEFT + 90)) "${BENCH[@]}" --framework jax --batches 10 --budget-s "$LEFT" \
    --row-budget-s 10 --skip-done
fi

stage "summary"
"${BENCH[@]}" --summarize >/dev/null 2>>"$LOG"
cat "$OUT/topk_check.json" 2>/dev/null
cat "$OUT/bench.md"
