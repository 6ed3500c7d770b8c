# Every target installs what it needs into .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip

.DEFAULT_GOAL := help
.PHONY: help install demo test check lint typecheck bench soak clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev,serve]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install asyncfetch with its dev tools

demo: $(STAMP)  ## serve a generated checkpoint on 127.0.0.1, download, verify and torch.load it
	$(BIN)/python benchmarks/demo.py

check: lint typecheck  ## ruff (lint, format) and mypy --strict

lint: $(STAMP)
	$(BIN)/ruff check asyncfetch tests benchmarks
	$(BIN)/ruff format --check asyncfetch tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict asyncfetch

test: check  ## lint, type-check and run the test suite
	$(BIN)/python -m pytest -q

bench: $(STAMP)  ## asyncfetch against its peers on nginx (installs nginx, aria2, curl)
	bash benchmarks/setup.sh $(VENV)
	$(BIN)/python -m benchmarks

soak: $(STAMP)  ## 1,000 downloads through the fault server (30% faulty); no leak, no wrong file (~10-20 min)
	$(BIN)/python -m benchmarks.soak

clean:  ## remove the venv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
