# Every target installs what it needs into .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip

.DEFAULT_GOAL := help
.PHONY: help install demo test check lint typecheck bench soak browser screenshot bench-service clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev,torch,serve]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install asyncfetch with its extras (torch, serve) and dev tools

demo: $(STAMP)  ## serve a generated checkpoint on 127.0.0.1, download, verify and torch.load it
	$(BIN)/python benchmarks/demo.py

check: lint typecheck  ## ruff (lint, format) and mypy --strict

lint: $(STAMP)
	$(BIN)/ruff check asyncfetch tests benchmarks
	$(BIN)/ruff format --check asyncfetch tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict asyncfetch

test: check browser  ## lint, type-check and run the test suite
	$(BIN)/python -m pytest -q

# The status page's test drives chromium through chromedriver (Debian's packages). Installed
# quietly where apt-get can (root, e.g. CI); elsewhere the test is skipped, saying why (not under
# CI=true: there a skip fails the run).
browser:  ## chromium and chromedriver for the status page test, where apt-get can install them
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium and chromium-driver (apt-get)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium chromium-driver) >/dev/null \
	      || echo "make: could not install chromium; the status page test will be skipped"; \
	  else echo "make: no chromium and no apt-get as root; the status page test will be skipped"; fi; }

bench-service: $(STAMP)  ## asyncfetch serve under load: 500 jobs, 100 Range readers, 2 kill -9s
	$(BIN)/python benchmarks/service_load.py

screenshot: $(STAMP) browser  ## docs/img/status-page.png: the status page with a few jobs
	$(BIN)/python benchmarks/screenshot.py

bench: $(STAMP)  ## asyncfetch against its peers on nginx (installs nginx, aria2, curl)
	bash benchmarks/setup.sh $(VENV)
	$(BIN)/python -m benchmarks

soak: $(STAMP)  ## 1,000 downloads through the fault server (30% faulty); no leak, no wrong file (~10-20 min)
	$(BIN)/python -m benchmarks.soak

clean:  ## remove the venv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
