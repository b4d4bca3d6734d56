#!/usr/bin/env bash
# One pass over everything that needs a CUDA GPU, for a developer on a GPU machine: build the
# operators, run every GPU test, then the benchmarks that the operator and training-speed work
# is judged by. Each step is time-boxed and logged; a failing step does not stop the next.
#
#   scripts/gpu_check.sh [OUT_DIR] [quick]
#
# OUT_DIR (default reports/gpu-check) receives one log per step and the benchmarks' reports;
# `quick` keeps to the build, the GPU tests, the bf16 training benchmark and bench wgrad. Needs
# torch with CUDA, nvcc and ninja; ray, mlflow and submitit are not needed (no GPU test uses them).
set -uo pipefail
out=${1:-reports/gpu-check}
mode=${2:-full}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
start=$(date +%s)

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log it, report its status
    local name=$1 limit=$2
    shift 2
    local began=$(date +%s)
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local status=$?
    printf '%-12s exit %-3s %4ss  (%s)\n' "$name" "$status" "$(( $(date +%s) - began ))" "$*" \
        | tee -a "$out/steps.txt"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
step build 900 "$python" -m d2bench ops build
step tests 1500 "$python" -m pytest -q -m cuda -rs -p no:cacheprovider \
    tests/test_kernel_policy.py tests/test_backward_routing.py tests/test_step_profile.py \
    tests/test_precision.py tests/test_ops_cuda.py tests/test_bench_tiles.py tests/test_models.py \
    tests/test_checkpoint_selection.py tests/test_bench_wgrad.py
step train-bf16 900 "$python" -m d2bench bench train --precision bf16 --batch 2 --profile \
    --variants baseline dcnv2 d2conv3d_iv --out "$out/train-bf16"
step wgrad 600 "$python" -m d2bench bench wgrad --out "$out/wgrad"
if [ "$mode" != quick ]; then
    step train-branch 900 "$python" -m d2bench bench train --precision bf16 --batch 2 --profile \
        --branch-precision autocast --variants d2conv3d_iv --out "$out/train-branch-autocast"
    step train-fp16 1200 "$python" -m d2bench bench train --precision fp16 --batch 2 \
        --sampling-precision autocast fp32 --variants baseline dcnv2 d2conv3d_iv \
        --out "$out/train-fp16"
    step train-keep 900 "$python" -m d2bench bench train --precision bf16 --batch 2 \
        --keep-grad-layout --variants baseline d2conv3d_iv --out "$out/train-keep-layout"
    step train-compile 1500 "$python" -m d2bench bench train --precision bf16 --batch 2 \
        --compile --variants baseline d2conv3d_iv --out "$out/train-compile"
    step model 1200 "$python" -m d2bench bench model --out "$out/model"
    step ops 1500 "$python" -m d2bench bench ops --out "$out/ops"
fi
echo "done in $(( $(date +%s) - start )) s; logs and reports in $out" | tee -a "$out/steps.txt"
