# Set-up lives here, so that a fresh machine needs nothing but Python 3.10+ and a C++ compiler.
#   make demo   set up, then run the main job: fit a radiance field to the built-in scene (5 min)
#   make test   set up, then run the default test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch: reuse one that the system Python already has (e.g. a CUDA build on a GPU machine);
# otherwise install the pinned CPU build (never an unpinned torch: that pulls a CUDA build).
TORCH_PIN ?= torch==2.13.0
# (a python3 that is itself a virtual environment does not count: a venv made from it with
# --system-site-packages would see its base interpreter's packages, not that torch)
SYSTEM_HAS_TORCH := $(shell python3 -c "import sys, torch; sys.exit(sys.prefix != sys.base_prefix)" >/dev/null 2>&1 && echo 1)
STAMP := $(VENV)/.fields-setup
SOURCES := $(wildcard csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu) setup.py pyproject.toml

.PHONY: setup demo test lint clean browser cuda-objects gpu-check cuda-build-check

# The CUDA kernels compiled by nvcc alone (no torch needed), for CUDA_ARCHS, one object per .cu
# file (`make -j cuda-objects` builds them in parallel; each is rebuilt only when its sources
# or the architectures change). A CUDA build links them instead of compiling the kernels again
# (FIELDS_CUDA_PREBUILT=build/cuda: scripts/gpu_check.sh, scripts/cuda_build_check.sh).
CUDA_ARCHS ?= 90
NVCC_FLAGS ?= -O3
CU_SOURCES := $(wildcard csrc/kernels/*.cu)
CU_OBJECTS := $(patsubst csrc/kernels/%.cu,build/cuda/%.cu.o,$(CU_SOURCES))
CU_HEADERS := $(wildcard csrc/kernels/*.h csrc/kernels/*.cuh)
CUDA_ARCH_STAMP := build/cuda/archs-$(subst $(eval) ,_,$(strip $(CUDA_ARCHS)))
cuda-objects: $(CU_OBJECTS)
$(CUDA_ARCH_STAMP):
	mkdir -p build/cuda
	rm -f build/cuda/archs-*
	touch $@
build/cuda/%.cu.o: csrc/kernels/%.cu $(CU_HEADERS) $(CUDA_ARCH_STAMP)
	@start=$$(date +%s); \
	nvcc -c -std=c++17 $(NVCC_FLAGS) -Icsrc $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
	  --compiler-options -fPIC $< -o $@ && echo "nvcc $< ($(CUDA_ARCHS)): $$(( $$(date +%s) - start )) s"

# On a GPU machine: build fields._C with CUDA in place, run the gpu tests and the benchmark.
gpu-check:
	bash scripts/gpu_check.sh

# On any machine with nvcc (no GPU needed): build fields._C with the CUDA kernels against a CUDA
# build of torch in its own virtual environment and check that it loads without a GPU.
cuda-build-check:
	bash scripts/cuda_build_check.sh

setup: $(STAMP) browser

# System packages (Debian, apt, as root): chromium for the viewer's browser tests (they skip,
# saying why, without it) and libusb-1.0 for open3d (signed distances to meshes).
browser:
	@need=""; command -v chromium >/dev/null 2>&1 || need="$$need chromium"; \
	ldconfig -p 2>/dev/null | grep -q libusb-1.0 || need="$$need libusb-1.0-0"; \
	if [ -z "$$need" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing with apt:$$need"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$need >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$need >/dev/null 2>&1; } || \
	  echo "could not install$$need with apt: browser tests skip without chromium; fields fit sdf --mesh needs libusb-1.0"; \
	else echo "missing$$need and apt-get (as root) not available: browser tests skip without chromium; fields fit sdf --mesh needs libusb-1.0"; fi

$(STAMP): $(SOURCES)
ifeq ($(SYSTEM_HAS_TORCH),1)
	test -x $(PY) || python3 -m venv --system-site-packages $(VENV)
else
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_PIN)"
endif
	$(PIP) install -q "setuptools>=77" wheel ninja pybind11 numpy
	$(PIP) install -q --no-build-isolation -e ".[dev]"
	$(PY) -c "import fields._C, fields._ext as e; print('fields._C built, CPU kernels:', e.cpu_isa())"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/fields fit nerf

test: setup
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf build $(VENV) fields/_C*.so *.egg-info
