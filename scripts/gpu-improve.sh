#!/usr/bin/env bash
# Runs on a GPU machine (16 cores), in one call: one self-improvement round of the shipped
# default at a scale the 2-core machine cannot reach in a session (issue 7):
#   1. demonstrations with our own binary;
#   2. `improve --rounds 1`: refined plans executed on every core (--device cpu), many attempts
#      per task so that the hard tasks yield clips, fine-tuning on the GPU (--train-device cuda),
#      generation and refinement together, then the round's model evaluated on EVAL_SEEDS
#      held-out starts per task and view.
# Whatever SECONDS_LEFT cuts is finished on the CPU machine by the same `improve` command with
# --out on the unpacked round.tar: collection continues after its last logged start (stop 13: 392
# of 512 starts in 245 s), training restarts from the round's start. Results in $OUT: round.tar
# (the round folder: verified clips, model without its optimiser state, loss log, eval JSON and
# log) and the logs. Expects runs/gpu/videoagent.xz (the CUDA build, see README "GPU") and
# runs/rd (refinement data, `videoagent refine-data`).
#
#   EPISODES_PER_TASK=64 SUCCESSES=24 STEPS=300 BATCH=16 EVAL_SEEDS=6 SECONDS_LEFT=245 \
#     bash scripts/gpu-improve.sh
set -euo pipefail
OUT=${OUT:?set OUT to the folder results go to}
EPISODES_PER_TASK=${EPISODES_PER_TASK:-64}
SUCCESSES=${SUCCESSES:-24}
STEPS=${STEPS:-300}
BATCH=${BATCH:-16}
EVAL_SEEDS=${EVAL_SEEDS:-6}
CRITIC=${CRITIC:-perception}
SECONDS_LEFT=${SECONDS_LEFT:-480}
. scripts/gpu-env.sh
nproc | tee "$OUT/cores.txt"

echo "== dataset"
"$BIN" dataset --episodes 40 --out "$WORK/data" > "$OUT/dataset.txt" 2>&1
tail -n 2 "$OUT/dataset.txt"

echo "== one round (${SECONDS_LEFT}s at most)"
timeout -s INT "$SECONDS_LEFT" "$BIN" improve --rounds 1 --episodes-per-task "$EPISODES_PER_TASK" \
  --successes-per-task "$SUCCESSES" --collect-replans 3 --collected-weight 4 --data "$WORK/data" \
  --refine-data runs/rd --plain-share 0.5 --steps-per-round "$STEPS" --batch "$BATCH" --lr 1e-4 \
  --warmup 20 --eval-seeds "$EVAL_SEEDS" --critic "$CRITIC" --device cpu --train-device cuda \
  --out "$WORK/improve" > "$OUT/improve.txt" 2>&1 || echo "improve stopped: $?"
tr '\r' '\n' < "$OUT/improve.txt" | grep -v "^ *[0-9]*: \|^ *at " | tail -n 30

echo "== results"
tar -C "$WORK/improve" --exclude=train_state.safetensors -cf "$OUT/round.tar" . || true
tar -tf "$OUT/round.tar" | sed -n '1,20p' # sed reads to the end: no SIGPIPE under pipefail
