# `make test` and `make demo` work on a fresh machine: each builds .venv from the pinned
# requirements when they changed (or when .venv is missing), and is safe to run again.
# The project itself is installed into .venv editable, without dependencies (the pinned ones are
# already there) and with the pinned setuptools of requirements/dev.txt as build backend: so
# `.venv/bin/image-pipeline`, `.venv/bin/python -m pipeline` and the pytest fixtures of
# pipeline.testing work from any folder.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := .cache/demo
SIMD_VENV := .cache/pillow-simd-venv

.PHONY: test demo bench bench-simd clean mutation interleavings

$(STAMP): requirements/dev.txt requirements/lambda.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --editable .
	touch $(STAMP)

# The project's suite, then the example plugin's own tests run from its folder, as its author would.
test: $(STAMP)
	$(BIN)/python -m pytest
	cd examples/og-image && $(CURDIR)/$(BIN)/python -m pytest

# The local stack (S3, SNS, the two functions, a CDN and a page, on 127.0.0.1), the sample photos
# uploaded through S3 and a table of their variations; then the page until Ctrl-C.
# `make demo ARGS=--once` stops after the table.
demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/python -m pipeline.samples $(DEMO)/photos
	$(BIN)/image-pipeline local --upload $(DEMO)/photos/* $(ARGS)

# Whole processes against peers, the warm path (warm.py), the Lambda artifact's cold start when
# python3.12 (Lambda's runtime) is here (found as the artifact build finds it), the backfill.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/bench.txt
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/warm.py
	if $(BIN)/python -c "import sys; from infra.artifact import find_interpreter; sys.exit(not find_interpreter('3.12'))"; \
	then $(BIN)/python benchmarks/cold_start.py; \
	else echo "(cold_start.py skipped: it needs python3.12, on PATH or one of pyenv's versions)"; fi
	$(BIN)/python benchmarks/backfill.py

# The same benchmark with our process on Pillow-SIMD instead of Pillow. It is built from source
# (no wheels exist): it needs a C compiler and the libjpeg-turbo and zlib headers.
bench-simd: $(STAMP)
	test -x $(SIMD_VENV)/bin/python || $(PYTHON) -m venv $(SIMD_VENV)
	CC="cc -mavx2" $(SIMD_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/bench-simd.txt
	$(BIN)/python benchmarks/bench.py --python $(SIMD_VENV)/bin/python

clean:
	rm -rf $(VENV) .cache .pytest_cache

# Mutation testing of the data path and the guardrails (minutes; not part of `make test`). Run it
# alone: mutmut's timeouts send SIGXCPU to the process ids of finished test runs, which another
# job on the machine may have been given by then.
# The interleaving test explores one switch per schedule here, two in `make test`'s two-event cases.
mutation: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/mutation.txt
	rm -rf mutants
	INTERLEAVING_BOUND=1 $(BIN)/mutmut run
	$(BIN)/mutmut results

# Every scenario of tests/test_interleavings.py with two switches per schedule (many minutes).
interleavings: $(STAMP)
	INTERLEAVING_BOUND=2 $(BIN)/python -m pytest tests/test_interleavings.py -q -s
