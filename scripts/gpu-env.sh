# Sourced by the gpu-*.sh scripts on the GPU machine: unpacks the CUDA build shipped in
# runs/gpu/videoagent.xz into a fresh $WORK, sets $BIN, points the loader at the CUDA 13
# libraries of the machine's PyTorch (candle's build links libcudart/cublas/curand 13) and
# records the GPU in $OUT/gpu.txt.
WORK=$(mktemp -d)
xz -dc runs/gpu/videoagent.xz > "$WORK/videoagent"
chmod +x "$WORK/videoagent"
BIN="$WORK/videoagent"
SP=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
N="$SP/nvidia"
export LD_LIBRARY_PATH="$N/cu13/lib:$N/cuda_runtime/lib:$N/cublas/lib:$N/curand/lib:$N/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv | tee "$OUT/gpu.txt"
