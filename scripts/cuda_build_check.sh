#!/usr/bin/env bash
# The full CUDA build, checked on a machine without a GPU (CI runs it wherever nvcc is found):
#
#   1. a virtual environment of its own ($CUDA_VENV, default .venv-cuda) with a CUDA build of
#      torch ($TORCH_CUDA_PIN, default torch==2.14.1: a CUDA 13 build, from the package index),
#   2. the kernels compiled by nvcc alone for $CUDA_ARCHS (default "80 90"), by
#      `make cuda-objects` (objects already there for the same architectures are reused: CI
#      compiles them once, for both checks),
#   3. fields._C built against that torch with the CUDA bindings, linking those objects
#      (FIELDS_CUDA_PREBUILT), out of tree: the CPU build of fields/_C*.so is left alone,
#   4. the built module imported with no GPU visible (CUDA_VISIBLE_DEVICES=): every symbol
#      resolves (Python loads extensions with RTLD_NOW), the CUDA kernels are reported present,
#      torch reports no device, the CPU kernels run, and a CUDA call is refused with a message.
#
# Prints each stage's seconds. Exit status 0 only if every stage passed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CUDA_VENV:-.venv-cuda}
PIN=${TORCH_CUDA_PIN:-torch==2.14.1}
ARCHS=${CUDA_ARCHS:-80 90}
command -v nvcc >/dev/null || { echo "cuda_build_check: nvcc not found on the PATH" >&2; exit 1; }
t0=$(date +%s)
# torch finds the toolkit from CUDA_HOME, else from nvcc's folder: an nvcc that is a wrapper
# script (/usr/local/bin/nvcc -> exec /usr/local/cuda-13.0/bin/nvcc) would point it elsewhere
if [ -z "${CUDA_HOME:-}" ]; then
  for home in "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")" \
              "$(dirname "$(dirname "$(awk '/exec/ {print $2}' "$(command -v nvcc)" 2>/dev/null)")")" \
              /usr/local/cuda; do
    if [ -f "$home/include/cuda_runtime_api.h" ]; then export CUDA_HOME=$home; break; fi
  done
fi
[ -n "${CUDA_HOME:-}" ] || { echo "cuda_build_check: no CUDA toolkit headers found (set CUDA_HOME)" >&2; exit 1; }
stage() { echo "cuda_build_check: $1 ($(( $(date +%s) - t0 )) s)"; }

# 1. torch with CUDA, in its own environment
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.version.cuda is None)" 2>/dev/null
then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "$PIN"
fi
"$VENV/bin/python" -m pip install -q "setuptools>=77" wheel ninja pybind11 numpy
"$VENV/bin/python" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
stage "environment ready"

# 2. the kernels, nvcc alone
make -s -j"$(nproc)" cuda-objects CUDA_ARCHS="$ARCHS" NVCC_FLAGS="${NVCC_FLAGS:--O3}"
stage "kernel objects ready (build/cuda, sm ${ARCHS// /, sm })"

# 3. fields._C with the CUDA bindings, linked against the CUDA torch, out of tree
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
arch_list=$(echo "$ARCHS" | sed -E 's/([0-9])([0-9])/\1.\2/g; s/ /;/g')
FIELDS_CUDA=1 FIELDS_CUDA_PREBUILT=build/cuda TORCH_CUDA_ARCH_LIST="$arch_list" \
  MAX_JOBS=${MAX_JOBS:-$(nproc)} "$VENV/bin/python" setup.py -q build_ext \
  --build-lib "$work/lib" --build-temp "$work/tmp" > "$work/build.log" 2>&1 \
  || { grep -E -m 20 -A3 "error|FAILED" "$work/build.log"; tail -5 "$work/build.log"
       echo "cuda_build_check: the CUDA build failed" >&2; exit 1; }
so=$(find "$work/lib/fields" -name '_C*.so' | head -1)
[ -n "$so" ] || { echo "cuda_build_check: the build made no fields/_C*.so" >&2; exit 1; }
stage "fields._C built with the CUDA kernels ($(du -h "$so" | cut -f1))"

# 4. load it with no GPU visible: a copy of the package with this _C in it
mkdir -p "$work/pkg"
cp -r fields "$work/pkg/"
rm -f "$work/pkg/fields/"_C*.so
cp "$so" "$work/pkg/fields/"
(cd "$work/pkg" && CUDA_VISIBLE_DEVICES= "$OLDPWD/$VENV/bin/python" - <<'EOF'
import torch

import fields._ext as e
from fields.nn.mlp import FusedMLP

assert e.available(), e.unavailable_reason()
assert e.has_cuda_kernels(), "fields._C was built without its CUDA kernels"
ext = e.extension()
missing = [f for f in ("mlp_cuda_forward", "mlp_cuda_backward", "mlp_cuda_double_backward",
                       "grid_cuda_forward", "mlp_cpu_forward", "batched_mlp_cuda_forward",
                       "batched_mlp_cuda_backward") if not hasattr(ext, f)]
assert not missing, f"fields._C lacks {missing}"
assert not torch.cuda.is_available(), "a GPU is visible: this check is for machines without one"
net = FusedMLP(8, 4, 32, 2)
y = net(torch.rand(64, 8))  # the CPU kernels of the same build
assert net.last_backend == "cpu" and y.shape == (64, 4), net.last_backend
try:
    FusedMLP(8, 4, 32, 2, backend="cuda")(torch.rand(64, 8))
except ValueError as err:
    print(f"no GPU: backend='cuda' is refused: {err}")
else:
    raise AssertionError("backend='cuda' ran without a GPU")
print(f"fields._C loads with its CUDA kernels (torch {torch.__version__}, CUDA "
      f"{torch.version.cuda}); no device present; the CPU kernels run ({e.cpu_isa()})")
EOF
) || { echo "cuda_build_check: the CUDA build does not load without a GPU" >&2; exit 1; }
stage "passed"
