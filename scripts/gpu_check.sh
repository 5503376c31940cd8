#!/usr/bin/env bash
# The GPU checks of the CUDA kernels, in one run on a machine with an NVIDIA GPU, torch with
# CUDA, nvcc and ninja (e.g. the device tool's H200: `make gpu-check` there, or this script).
#
#   1. builds fields._C with the CUDA kernels in place (linking build/cuda/*.o when they were
#      built ahead with `make cuda-objects`, which needs nvcc alone: saves GPU-machine time),
#   2. runs the gpu tests (tests/test_{mlp,grid,march}_cuda.py: the kernels' values, gradients
#      and second derivatives against the torch reference; tests/test_nerf.py: a radiance
#      field trained on the GPU),
#   3. runs `fields bench mlp --device cuda` (widths 64/128, depths 2/4, batches 2^18, 2^20,
#      2^22; fp16; tiny-cuda-nn too when importable) and `fields bench encoding --device cuda`
#      (the 3-D hash grid, 16 levels x 2 features, 2^19 entries).
#
# With the device tool: `make cuda-objects` here first (about 5 minutes of nvcc on 2 cores, no
# GPU needed), then run `bash scripts/gpu_check.sh` there with carry ["build/cuda"] and a
# timeout of about 9 minutes; the build there then compiles only the C++ bindings.
#
# TEST_TIMEOUT, BENCH_TIMEOUT and ENCODING_TIMEOUT (seconds; 0 skips the encoding benchmark)
# bound the stages. End-to-end fits: scripts/gpu_e2e.py.
#
# Everything goes to $OUT (default gpu_out/): device.txt, build.log, tests.log, bench.jsonl,
# bench.txt, encoding.jsonl. Needs no package index: only torch, numpy, pytest, rich and typer
# (all on the device image) are imported.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name(0))"
  nvcc --version | tail -2; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

start=$(date +%s)
if ls build/cuda/*.o >/dev/null 2>&1; then export FIELDS_CUDA_PREBUILT=build/cuda; fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
if ! $PY setup.py build_ext --inplace > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; echo "build failed"; exit 1
fi
echo "build: $(( $(date +%s) - start )) s (prebuilt objects: ${FIELDS_CUDA_PREBUILT:-none})"
$PY -c "import fields._ext as e; assert e.has_cuda_kernels(), 'no CUDA kernels'" || exit 1

timeout ${TEST_TIMEOUT:-240} $PY -m pytest -q -m gpu -p no:cacheprovider -p no:dash tests/test_mlp_cuda.py \
  tests/test_grid_cuda.py tests/test_march_cuda.py tests/test_batched_mlp_cuda.py tests/test_nerf.py 2>&1 | tee "$OUT/tests.log" | tail -25

timeout ${BENCH_TIMEOUT:-240} $PY -m fields.cli bench mlp --device cuda --widths 64 --widths 128 --depth 2 \
  --depth 4 --batches 262144 --batches 1048576 --batches 4194304 --min-time 0.3 --json \
  > "$OUT/bench.jsonl" 2> "$OUT/bench.err"
$PY - "$OUT/bench.jsonl" <<'EOF' | tee "$OUT/bench.txt"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
print(f"{'backend':8} {'width':>5} {'depth':>5} {'batch':>8} {'mode':8} {'G samples/s':>11} "
      f"{'vs torch':>8}")
for r in rows:
    print(f"{r['backend']:8} {r['width']:5d} {r['depth']:5d} {r['batch']:8d} {r['mode']:8} "
          f"{r['samples_per_s'] / 1e9:11.3f} {r['speedup']:7.2f}x")
EOF

[ "${ENCODING_TIMEOUT:-90}" = 0 ] && exit 0
timeout ${ENCODING_TIMEOUT:-90} $PY -m fields.cli bench encoding --device cuda --batches 1048576 --batches 4194304 \
  --min-time 0.3 --json > "$OUT/encoding.jsonl" 2> "$OUT/encoding.err"
cat "$OUT/encoding.jsonl"
