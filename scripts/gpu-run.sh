#!/usr/bin/env bash
# Runs on a GPU machine (see README "GPU"): unpacks the CUDA build of videoagent shipped in
# runs/gpu/, generates the demonstrations there with our own binary, trains a model with
# `videoagent train --device cuda` for a fixed wall-clock budget (Ctrl-C semantics: it saves and
# stops), then benchmarks the model on the GPU. Everything it produces goes to $OUT.
#
#   TRAIN_SECONDS=420 IMAGE_SIZE=32 EPISODES=40 bash scripts/gpu-run.sh
set -euo pipefail
OUT=${OUT:?set OUT to the folder results go to}
TRAIN_SECONDS=${TRAIN_SECONDS:-420}
IMAGE_SIZE=${IMAGE_SIZE:-32}
EPISODES=${EPISODES:-40}
BATCH=${BATCH:-8}
WORK=$(mktemp -d)
xz -dc runs/gpu/videoagent.xz > "$WORK/videoagent"
chmod +x "$WORK/videoagent"

# candle's CUDA build links libcudart/cublas/curand 13: take them from the machine's PyTorch.
SP=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
N="$SP/nvidia"
export LD_LIBRARY_PATH="$N/cu13/lib:$N/cuda_runtime/lib:$N/cublas/lib:$N/curand/lib:$N/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv | tee "$OUT/gpu.txt"
BIN="$WORK/videoagent"

echo "== dataset"
/usr/bin/time -v "$BIN" dataset --episodes "$EPISODES" --out "$WORK/data" 2> "$OUT/dataset-time.txt" | tee "$OUT/dataset.txt"

echo "== train"
mkdir -p "$OUT/run"
timeout -s INT "$TRAIN_SECONDS" "$BIN" train --data "$WORK/data" --out "$OUT/run" --image-size "$IMAGE_SIZE" \
  --batch "$BATCH" --steps 1000000 --checkpoint-every 500 --device cuda 2>&1 | tr '\r' '\n' | tail -n 20 | tee "$OUT/train.txt" || true
ls -la "$OUT/run"

echo "== bench"
VIDEOAGENT_MODEL="$OUT/run" timeout 150 "$BIN" bench model --device cuda --configs default,ithor,metaworld \
  --plan-steps 25 --train-steps 10 --json "$OUT/bench-cuda.json" 2>&1 | tee "$OUT/bench.txt" || true
