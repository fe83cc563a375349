#!/usr/bin/env bash
# Checks, on a machine without a GPU, that a CUDA build of videoagent falls back to the CPU with
# a one-line note and still plans, and that `--device cuda` is a one-line error. It runs the
# binary against the CUDA toolkit's stub libcuda (which loads but opens no device).
#
#   . /opt/cuda-pypi/env.sh && CARGO_TARGET_DIR=target-cuda cargo build --release --features cuda
#   BINARY=target-cuda/release/videoagent bash scripts/cuda-fallback-check.sh
set -euo pipefail
BINARY=${BINARY:?set BINARY to a CUDA build of videoagent}
CUDA=${CUDA:-/opt/cuda-pypi}
STUBS=$(mktemp -d)
trap 'rm -rf "$STUBS"' EXIT
ln -s "$CUDA/cuda/lib64/stubs/libcuda.so" "$STUBS/libcuda.so.1"
export LD_LIBRARY_PATH="$STUBS:$CUDA/venv/lib/python3.11/site-packages/nvidia/cu13/lib"

log=$("$BINARY" plan --task push --steps 2 --out "$STUBS/plan" --device auto --log info 2>&1)
note=$(grep -m1 'device:' <<<"$log")
grep -q 'device: CPU (auto: CUDA GPU could not be opened' <<<"$note" || {
  echo "FAIL: no fallback note: $log"; exit 1; }
[[ $(grep -c 'candle_core::' <<<"$log") == 0 ]] || { echo "FAIL: a backtrace in the log: $log"; exit 1; }
[[ -f "$STUBS/plan/plan.json" ]] || { echo "FAIL: no plan written"; exit 1; }
echo "ok: $note"

if err=$("$BINARY" plan --task push --steps 2 --out "$STUBS/plan2" --device cuda 2>&1); then
  echo "FAIL: --device cuda succeeded without a GPU"; exit 1
fi
[[ $(wc -l <<<"$err") == 1 ]] || { echo "FAIL: not one line: $err"; exit 1; }
echo "ok: $err"
