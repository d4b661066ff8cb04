#!/usr/bin/env bash
# The prepared GPU run (README "Benchmarks"): on a fresh lent GPU machine, install cmcr from the project's
# files, check the accelerator paths against the CPU, and measure Eq. 2, training and the encoders at
# paper-like sizes — under ~8 minutes on an H100 — writing every figure to $OUT/gpu_check.txt.
#
#   bash benchmarks/gpu_wheels.sh                  # here, once: wheels the GPU image lacks → .gpu/wheels/
#   device run, carry [".gpu"]: bash benchmarks/gpu_check.sh
#   bash benchmarks/gpu_check.sh                   # without a GPU: the same steps at tiny sizes (CPU fallback)
#
# Steps: pytest -m device; bench_memory.py (ours = memory.kernel auto, streamed, SDPA, GEMM floor) in fp32
# and bf16; one training epoch at batch 10240 on 2.33M synthetic rows; the encoders' items/s.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/gpu_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.txt"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
: > "$LOG"
say() { echo "== $*" | tee -a "$LOG"; }
step() {  # step <seconds> <description> <command…>: run with a time limit, log output, never abort the script
    local limit="$1" what="$2"; shift 2
    say "$what"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG" | tail -40
    local rc=${PIPESTATUS[0]}
    say "$what: exit $rc after $((SECONDS - start)) s"
}

if ! "$PY" -c "import cmcr, open_clip, laion_clap" 2>/dev/null; then
    if [ -d .gpu/wheels ]; then
        step 300 "install the carried wheels" "$PY" -m pip install --no-index --no-deps --quiet .gpu/wheels/*.whl
    fi
    step 300 "install cmcr (editable, no dependencies fetched)" "$PY" -m pip install --no-index --no-deps \
        --no-build-isolation --ignore-requires-python --quiet -e .
fi
# every module the encoders import, so a missing wheel shows here and not as a swallowed error deep in laion_clap
step 120 "import check" "$PY" -c "import cmcr, open_clip, laion_clap, librosa, soundfile, torchlibrosa; print('imports ok')"
DEVICE=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
"$PY" -c "import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU: CPU fallback, tiny sizes')" | tee -a "$LOG"

if [ "$DEVICE" = cuda ]; then
    MEM_SIZES="20000x100000,200000x1800000"; TRAIN="--rows 2330000 --batch-size 10240"; ENC="--device cuda --n 64"
    [ -d .gpu/fixtures ] && export CMCR_OFFICIAL_FIXTURES="$PWD/.gpu/fixtures"
    step 240 "pytest -m device" "$PY" -m pytest -q -m device -p no:cacheprovider
    step 150 "Eq. 2 chunk sizes (query x memory), bf16 and fp32" bash -c "
        '$PY' benchmarks/bench_memory.py sweep --device cuda --sizes 50000x1800000 --repeats 1 --precision bf16 \
            --chunks 1024x4096,4096x65536,8192x65536 &&
        '$PY' benchmarks/bench_memory.py sweep --device cuda --sizes 50000x1800000 --repeats 1 --precision fp32 \
            --chunks 1024x4096,4096x65536,8192x65536"
else
    MEM_SIZES="1000x4000"; TRAIN="--rows 20000 --batch-size 1024 --device cpu"; ENC="--device cpu --n 2"
    say "pytest -m device: skipped (no GPU; CMCR_TEST_DEVICE=cpu pytest -m device checks the tests themselves)"
fi
step 240 "Eq. 2, fp32 (time / SDPA)" "$PY" benchmarks/bench_memory.py main --sizes "$MEM_SIZES" --orders random \
    --repeats 1 --device "$DEVICE" --methods ours,streamed,sdpa,gemm
if [ "$DEVICE" = cuda ]; then
    step 120 "Eq. 2, bf16" "$PY" benchmarks/bench_memory.py main --sizes 200000x1800000 --orders random --repeats 1 \
        --device cuda --precision bf16 --methods ours,sdpa
fi
step 180 "training, one epoch" "$PY" benchmarks/bench_train.py $TRAIN
step 180 "encoders (items/s)" "$PY" benchmarks/bench_encoders.py $ENC
say "done; figures in $LOG"
