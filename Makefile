# kommunrouter: the two quick-start commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: run test lint typecheck pytest postgres browser train export bench learning-curve data-validate clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The service alone: no torch (what the Docker image installs too).
$(VENV)/.service-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

# Everything: service, training (torch CPU) and development tools.
$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train,dev]'
	@touch $@ $(VENV)/.service-installed

run: $(VENV)/.service-installed  ## set up and serve models/default on http://127.0.0.1:8000 (SQLite, open access)
	KOMMUNROUTER_OPEN_ACCESS=true $(BIN)/kommunrouter migrate
	KOMMUNROUTER_OPEN_ACCESS=true exec $(BIN)/kommunrouter serve --host 127.0.0.1 --port 8000

postgres:  ## start the local PostgreSQL when it is down (the tests use it)
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; \
		echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1

# Debian's chromium and its driver: the real-browser test of the staff pages drives them (Selenium).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:  ## install chromium and chromium-driver with apt-get when missing
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

lint: $(VENV)/.dev-installed  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev-installed  ## mypy on app/, training/ and bench/
	$(BIN)/mypy app training bench

pytest: $(VENV)/.dev-installed postgres browser
	$(BIN)/pytest

test: lint typecheck pytest  ## set up, start PostgreSQL if down, run ruff, mypy and pytest

train: $(VENV)/.dev-installed  ## train the default model (runs/default), then export it to models/default
	$(BIN)/kommunrouter train --config configs/default.toml
	$(BIN)/kommunrouter export --run runs/default --out models/default --quantize int8

# The per-point budget that fits the whole curve (43 trainings, 57 points) in the issue's 2 hours on 2 CPU cores
# (measured on data 2.0: 1.67 hours of training):
# bf16 autocast where it pays (AMX or a GPU; fp32 elsewhere), 64 tokens, 60 to 80 optimiser steps per point.
LEARNING_CURVE_BUDGET := --set precision=auto --set max_length=64 --set min_steps=60 --set max_steps=80

learning-curve: $(VENV)/.dev-installed  ## the learning-from-less experiment (resumable; about 2 hours on 2 cores)
	$(BIN)/kommunrouter experiment learning-curve $(LEARNING_CURVE_BUDGET)

data-validate: $(VENV)/.dev-installed  ## validate the bundled data set
	$(BIN)/kommunrouter data validate data/reports/train.jsonl data/reports/dev.jsonl data/reports/test.jsonl

bench: $(VENV)/.dev-installed postgres  ## run the benchmarks in bench/ (writes bench/results/)
	$(BIN)/python bench/run_all.py

clean:  ## remove the virtualenv, caches and local databases
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
