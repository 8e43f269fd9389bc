#!/usr/bin/env bash
# Every GPU number in one run (< 5 min on one H200): the paper grid trained by jsae vs a
# sequential PyTorch loop on the same GPU, the step profile's XLA pieces, and the embed
# benchmark where NeMo is installed. Meant for a machine that already has jax[cuda],
# torch (CUDA), flax, optax, orbax-checkpoint, tensorstore, pandas, pyarrow, scikit-learn,
# matplotlib and tqdm but no network: jsae installs with --no-deps (its CPU kernels are not
# needed there: on GPU jsae trains on lax.top_k and the dense path). omegaconf, if missing,
# is installed from a wheel carried in wheels/ (pip download omegaconf antlr4-python3-runtime -d wheels).
#
#   bash benchmarks/gpu.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/jsae-gpu}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}
python_has() { "$PY" -c "import $1" 2>/dev/null; }
python_has omegaconf || { [ -d wheels ] && "$PY" -m pip install -q --no-index --find-links wheels omegaconf; }
JSAE_KERNEL_MARCH=x86-64-v3 "$PY" -m pip install -q --no-deps --no-build-isolation -e . || exit 1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, torch.cuda.get_device_name(0))"
} 2>&1 | tee "$OUT/machine.txt"
echo "== grid_train: paper grid (84 models), batch 4096, jsae (dense on GPU) vs PyTorch loop on the same GPU"
timeout 240 "$PY" benchmarks/grid_train.py --steps 10 --warmup 2 --topk-path dense --torch-device cuda \
  --json "$OUT/grid_train_gpu.json" 2>&1 | tee "$OUT/grid_train_gpu.txt"
echo "== grid_train: batch 16384"
timeout 120 "$PY" benchmarks/grid_train.py --steps 10 --warmup 2 --batch-size 16384 --topk-path dense \
  --torch-device cuda --json "$OUT/grid_train_gpu_16k.json" 2>&1 | tee "$OUT/grid_train_gpu_16k.txt"
if python_has nemo.collections.asr && python_has soundfile; then
  echo "== embed: TitaNet on the GPU"
  timeout 120 "$PY" benchmarks/embed.py --device cuda --segments 64 --large-segments 32 --batch-sizes 1 8 32 \
    --json "$OUT/embed_gpu.json" 2>&1 | tee "$OUT/embed_gpu.txt"
else
  echo "== embed: skipped (NeMo is not installed on this machine; the embed extra needs it)" | tee "$OUT/embed_gpu.txt"
fi
