# `make test` and `make demo` work on a fresh machine: each builds .venv from the pinned
# requirements when they changed (or when .venv is missing), and is safe to run again.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := .cache/demo

.PHONY: test demo bench clean

$(STAMP): requirements/dev.txt requirements/lambda.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/python -m pipeline.samples $(DEMO)/photos
	$(BIN)/python -m pipeline process $(DEMO)/photos/* --out $(DEMO)/out
	@echo "written under $(DEMO)/out"

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/bench.txt
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) .cache .pytest_cache
