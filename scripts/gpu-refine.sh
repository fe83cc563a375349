#!/usr/bin/env bash
# Runs on a GPU machine, in one call of about 12 minutes: the steps that turn the shipped CPU
# default into a model that both generates and refines, and the measurements that say whether
# refinement helps (issues 3, 4 and 7):
#   1. demonstrations with our own binary (the GPU machine's cores);
#   2. generation training continued from $INIT for GEN_SECONDS (batch 32);
#   3. refinement data: the new model's own plans for dataset starts, critiqued, two generations
#      per start (so the consistency term has two earlier plans of the same start);
#   4. the refinement fine-tune (`train --refine-data`, a quarter of each batch plain
#      generation, consistency weight 1) for REFINE_SECONDS;
#   5. held-out quality per refinement iteration 0..4, and the paper's table (expert, baseline,
#      refine, replan) on 2 seeds per task and view, for the generation-only and the refined model.
# Results in $OUT: gen-model.tar and refine-model.tar (model folder + loss log; unpack with
# `tar -xf X.tar -C DIR`), logs, quality and eval JSON. Expects runs/gpu/videoagent.xz (the CUDA
# build, see README "GPU").
#
#   GEN_SECONDS=240 REFINE_SECONDS=240 bash scripts/gpu-refine.sh
set -euo pipefail
OUT=${OUT:?set OUT to the folder results go to}
GEN_SECONDS=${GEN_SECONDS:-240}
REFINE_SECONDS=${REFINE_SECONDS:-240}
EPISODES=${EPISODES:-40}
PER_TASK=${PER_TASK:-24}
INIT=${INIT:-sample_data/models/tabletop-cpu}
. scripts/gpu-env.sh

pack() { # run folder -> $OUT/<name>-model.tar
  [ -f "$1/model.safetensors" ] || return 0
  tar -C "$1" -cf "$OUT/$2-model.tar" config.json model.safetensors text_encoder.safetensors \
    loss.csv train_state.json
}

echo "== dataset"
"$BIN" dataset --episodes "$EPISODES" --out "$WORK/data" | tee "$OUT/dataset.txt"

echo "== generation (${GEN_SECONDS}s)"
timeout -s INT "$GEN_SECONDS" "$BIN" train --data "$WORK/data" --out "$WORK/gen" --init "$INIT" \
  --config tabletop --batch 32 --steps 1000000 --checkpoint-every 250 --device cuda \
  > "$OUT/train-gen.txt" 2>&1 || true
tr '\r' '\n' < "$OUT/train-gen.txt" | grep -v "^ *[0-9]*: \|^ *at " | tail -n 3
pack "$WORK/gen" gen

echo "== refinement data"
timeout 150 "$BIN" refine-data --data "$WORK/data" --out "$WORK/refine-data" --model "$WORK/gen" \
  --per-task "$PER_TASK" --generations 2 --device cuda > "$OUT/refine-data.txt" 2>&1 || true
tail -n 3 "$OUT/refine-data.txt"

echo "== refinement fine-tune (${REFINE_SECONDS}s)"
timeout -s INT "$REFINE_SECONDS" "$BIN" train --refine-data "$WORK/refine-data" --data "$WORK/data" \
  --init "$WORK/gen" --out "$WORK/refine" --batch 32 --steps 1000000 --checkpoint-every 250 \
  --device cuda > "$OUT/train-refine.txt" 2>&1 || true
tr '\r' '\n' < "$OUT/train-refine.txt" | grep -v "^ *[0-9]*: \|^ *at " | tail -n 3
pack "$WORK/refine" refine

echo "== held-out quality per refinement iteration, and the paper's table"
for run in gen refine; do
  [ -f "$WORK/$run/model.safetensors" ] || continue
  timeout 120 "$BIN" quality --model "$WORK/$run" --seeds 2 --refine 4 --device cuda \
    --json "$OUT/quality-$run.json" > "$OUT/quality-$run.txt" 2>&1 || true
  timeout 180 "$BIN" eval --model "$WORK/$run" --seeds 2 --modes expert,baseline,refine,replan \
    --threads 8 --device cuda --json "$OUT/eval-$run.json" > "$OUT/eval-$run.txt" 2>&1 || true
done
tail -n 14 "$OUT"/quality-*.txt "$OUT"/eval-*.txt || true
