# ecr-scan-gate: `make demo` shows the main job end to end; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.PHONY: venv redis test fuzz demo lint soak bench bench-gate clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

redis:
	sh scripts/ensure-redis.sh

test: lint redis
	$(PY) -m pytest -q

# The property tests with fresh random examples (the test command draws the same ones every run).
fuzz: venv redis
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q -p no:cacheprovider $$(grep -l '@given' tests/test_*.py)

demo: venv redis
	$(PY) scripts/demo.py

soak: venv redis
	$(PY) scripts/soak.py $(SOAK_ARGS)

# The runbook's shell gate vs the bot polling vs the bot with scan events (times scaled down 10x).
bench-gate: venv redis
	$(PY) scripts/bench_gate.py $(BENCH_GATE_ARGS)

# ruff (lint and format), then mypy: clean on bot/ and workers/, --strict on the pure core.
lint: venv
	$(PY) -m ruff check bot workers tests scripts
	$(PY) -m ruff format --check bot workers tests scripts
	$(PY) -m mypy
	$(PY) -m mypy --strict bot/core

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
