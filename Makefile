# attnsim — `make` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)
OUT    ?= out

.DEFAULT_GOAL := help
.PHONY: clean-cache help venv demo test test-slow test-all bench examples examples-full clean

help:  ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

# numba's on-disk cache keys a kernel on its own file only: whenever any file of _kernels/ changes,
# drop every cached kernel so that no stale helper survives in another file's cache.
KERNEL_STAMP := $(VENV)/.kernels-$(shell cat src/attnsim/_kernels/*.py | cksum | cut -d' ' -f1)

$(KERNEL_STAMP): $(STAMP)
	find src -name '*.nbi' -delete -o -name '*.nbc' -delete
	rm -f $(VENV)/.kernels-* && touch $@

venv: $(STAMP) $(KERNEL_STAMP)  ## create .venv and install attnsim with its test extra

demo: $(STAMP) $(KERNEL_STAMP)  ## run the balanced preset (paper setting), print a summary, write out/demo.png
	$(VENV)/bin/attnsim run --preset balanced --progress --overwrite --out $(OUT)/demo.npz
	$(VENV)/bin/attnsim plot $(OUT)/demo.npz --out $(OUT)/demo.png
	@echo "figure: $(OUT)/demo.png"

test: $(STAMP) $(KERNEL_STAMP)  ## run the default test suite (slow tests excluded)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP) $(KERNEL_STAMP)  ## run only the slow tests
	$(PY) -m pytest -m slow -q

test-all: $(STAMP) $(KERNEL_STAMP)  ## run every test
	$(PY) -m pytest -q

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(BENCH_STAMP)  ## install the bench extra (torch 2.13 CPU, jax) and run benchmarks/ -> benchmarks/RESULTS.md (~1 h); BENCH_ARGS=--quick for a short check
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

EXAMPLES := $(sort $(filter-out examples/_%,$(wildcard examples/*.py)))

examples: $(STAMP)  ## regenerate every figure and table of examples/ into out/examples (sweeps cached in out/examples/sweeps)
	@failed=""; for f in $(EXAMPLES); do echo "== $$f"; \
		MPLBACKEND=Agg ATTNSIM_OUT=$(OUT)/examples $(PY) $$f || failed="$$failed $$f"; done; \
		if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

examples-full: $(STAMP)  ## the full phase diagram (39 x 39, 3 seeds, tau = 1e3 and 1e12), the scaling study to d = 1e8, the Gaussian-twin study (resumable)
	MPLBACKEND=Agg ATTNSIM_OUT=$(OUT)/examples $(PY) examples/phase_diagram.py --full
	MPLBACKEND=Agg ATTNSIM_OUT=$(OUT)/examples $(PY) examples/scaling_laws.py --full
	MPLBACKEND=Agg ATTNSIM_OUT=$(OUT)/examples $(PY) examples/gaussian_twin.py --full

clean-cache:  ## drop numba's compiled-kernel caches (make test does it whenever _kernels/ changed)
	find src -name '*.nbi' -delete -o -name '*.nbc' -delete

clean: clean-cache  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .hypothesis build dist src/*.egg-info
