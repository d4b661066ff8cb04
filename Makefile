# Two entry points (README "Quick start"): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup test demo bench

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade-strategy only-if-needed -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	$(BIN)/cmcr provenance --out metrics/provenance.json
	@echo "results: $$(ls results/*.md | tr '\n' ' ')"

bench: setup
	$(BIN)/python benchmarks/bench_memory.py main
