# The two commands a new user needs: `make demo` (the main job) and `make test` (the suite).
# Both create .venv with Python >= 3.12 and pinned dependencies on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo
PYTEST_ARGS ?=

.PHONY: venv demo test bench lint clean clean-numba-cache compile-kernels

venv:
	@scripts/bootstrap-venv

demo: venv
	$(VENV)/bin/skyframes demo --output $(DEMO_DIR)

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench:
	@EXTRAS=test,bench scripts/bootstrap-venv
	$(PY) benchmarks/bench_background.py
	$(PY) benchmarks/quantum_memory.py

lint: venv
	$(VENV)/bin/ruff check python tests benchmarks
	$(VENV)/bin/ruff format --check python tests benchmarks

# numba checks a cached kernel against its own module's source only, so after editing
# one kernel module its callers elsewhere keep the old code until the cache goes:
# wherever it is (the package's __pycache__, NUMBA_CACHE_DIR, or the user cache directory
# a read-only installation uses). Then `make compile-kernels` fills it again.
USER_KERNEL_CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/skyframes/numba
clean-numba-cache:
	find python -path '*/__pycache__/*' \( -name '*.nbi' -o -name '*.nbc' \) -delete
	@if [ -n "$$NUMBA_CACHE_DIR" ]; then find "$$NUMBA_CACHE_DIR" \( -name '*.nbi' -o -name '*.nbc' \) -delete; fi
	@if [ -d "$(USER_KERNEL_CACHE)" ]; then find "$(USER_KERNEL_CACHE)" \( -name '*.nbi' -o -name '*.nbc' \) -delete; fi

# Compile every kernel the tasks use into the cache (make venv does it at install time).
compile-kernels: venv
	$(VENV)/bin/skyframes compile-kernels

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
