# whystream: `make demo` runs the main job end to end on the embedded stack;
# `make test` runs the test suite. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

.PHONY: demo test bench soak install browser clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/whystream demo

# Three pytest workers (pytest-xdist), a test file each at a time: each starts its own embedded
# stack; the suite is mostly waiting on brokers and timers, so a third worker on 2 cores still
# shortens it. The 20 slowest tests are listed at the end. PYTEST_ARGS="-n 0" runs it in one process.
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 3 --dist loadfile --durations=20 $(PYTEST_ARGS)

# The console's browser tests drive Debian's chromium through chromedriver: installed here when
# missing and apt-get can run (root, or sudo without a password); otherwise those tests skip, saying why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] && SUDO= || { sudo -n true 2>/dev/null && SUDO=sudo; }; }; then \
		echo "installing chromium and chromium-driver (apt-get) for the console's browser tests"; \
		$$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null; } || \
		echo "could not install chromium: the console's browser tests will be skipped"; \
	else echo "no chromium and no apt-get to install it: the console's browser tests will be skipped"; fi

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Mixed valid and bad traffic with kill -9 of the worker and Redis restarts; prints lost and
# duplicated counts (all must be 0) and the worker's RSS over time. Not part of `make test`.
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf var build *.egg-info
