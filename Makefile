# Set-up lives here, so that a fresh machine needs nothing but Python 3.10+ and a C++ compiler.
#   make demo   set up, then run the main job: fit a radiance field to the built-in scene (5 min)
#   make test   set up, then run the default test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch: reuse one that the system Python already has (e.g. a CUDA build on a GPU machine);
# otherwise install the pinned CPU build (never an unpinned torch: that pulls a CUDA build).
TORCH_PIN ?= torch==2.13.0
SYSTEM_HAS_TORCH := $(shell python3 -c "import torch" >/dev/null 2>&1 && echo 1)
STAMP := $(VENV)/.fields-setup
SOURCES := $(wildcard csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu) setup.py pyproject.toml

.PHONY: setup demo test lint clean browser

setup: $(STAMP) browser

# Debian's chromium, for the viewer's browser tests (they skip, saying why, without it)
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium (apt) for the viewer's browser tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } || \
	  echo "could not install chromium with apt: the browser tests will be skipped"; \
	else echo "chromium not found and apt-get (as root) not available: the browser tests will be skipped"; fi

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
