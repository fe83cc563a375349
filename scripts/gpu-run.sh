#!/usr/bin/env bash
# Runs on a GPU machine (see README "GPU"): unpacks the CUDA build of videoagent shipped in
# runs/gpu/, generates the demonstrations there with our own binary, trains a model with
# `videoagent train --device cuda` for a fixed wall-clock budget (Ctrl-C semantics: it saves and
# stops), then benchmarks the model on the GPU. Results go to $OUT: logs, model.tar (the
# trained model folder), benchmark JSON. Unpack with `tar -xf model.tar -C MODEL_DIR`.
#
#   TRAIN_SECONDS=420 IMAGE_SIZE=32 EPISODES=40 bash scripts/gpu-run.sh
set -euo pipefail
OUT=${OUT:?set OUT to the folder results go to}
TRAIN_SECONDS=${TRAIN_SECONDS:-420}
IMAGE_SIZE=${IMAGE_SIZE:-32}
EPISODES=${EPISODES:-40}
BATCH=${BATCH:-8}
. scripts/gpu-env.sh

echo "== dataset"
/usr/bin/time -v "$BIN" dataset --episodes "$EPISODES" --out "$WORK/data" 2> "$OUT/dataset-time.txt" | tee "$OUT/dataset.txt"

echo "== train"
mkdir -p "$OUT/run"
# A short first leg with synchronous launches, so a failing kernel is named, then the rest.
CUDA_LAUNCH_BLOCKING=1 timeout -s INT 60 "$BIN" train --data "$WORK/data" --out "$OUT/run" --image-size "$IMAGE_SIZE" \
  --batch "$BATCH" --steps 1000000 --checkpoint-every 500 --device cuda > "$OUT/train-first.txt" 2>&1 || true
tr '\r' '\n' < "$OUT/train-first.txt" | grep -v "^ *[0-9]*: \|^ *at " | tail -n 15
if [ -f "$OUT/run/train_state.json" ]; then
  timeout -s INT "$TRAIN_SECONDS" "$BIN" train --data "$WORK/data" --out "$OUT/run" --resume --steps 1000000 \
    --device cuda > "$OUT/train.txt" 2>&1 || true
  tr '\r' '\n' < "$OUT/train.txt" | tail -n 5
fi
ls -la "$OUT/run"
# The device returns only a few files per call, and none as large as the optimiser state:
# pack the model folder and the loss log into one archive and drop the rest.
if [ -f "$OUT/run/model.safetensors" ]; then
  tar -C "$OUT/run" -cf "$OUT/model.tar" config.json model.safetensors text_encoder.safetensors loss.csv
fi
mv "$OUT/run" "$WORK/run.keep"

if [ -z "${SKIP_BENCH:-}" ]; then
echo "== bench"
CONFIGS=tabletop,ithor,metaworld
[ -f "$WORK/run.keep/config.json" ] && CONFIGS=default,ithor,metaworld
# Each precision the reference is timed in: f32, TF32 (cuBLAS tensor cores for f32 matrix
# products) and bf16 (U-Net weights and activations); training is timed where it changes.
for P in f32 tf32 bf16; do
  TRAIN_STEPS=10; [ "$P" = bf16 ] && TRAIN_STEPS=0
  VIDEOAGENT_MODEL="$WORK/run.keep" timeout 150 "$BIN" bench model --device cuda --precision "$P" \
    --configs "$CONFIGS" --plan-steps 25 --train-steps "$TRAIN_STEPS" --json "$OUT/bench-cuda-$P.json" \
    2>&1 | tee "$OUT/bench-$P.txt" || true
done

echo "== reference PyTorch U-Net, same GPU (optional: needs runs/gpu/ref with the reference code)"
if [ -d runs/gpu/ref/guided_diffusion ]; then
  timeout 120 python3 scripts/reference_bench.py --ref runs/gpu/ref --site runs/gpu/ref/site \
    --json "$OUT/bench-reference.json" 2>&1 | tail -n 20 | tee "$OUT/bench-reference.txt" || true
fi
fi
