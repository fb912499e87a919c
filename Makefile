# dataengine: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dataengine-installed

.PHONY: install test test-slow demo clean-work bench help

help:
	@echo "make demo      install if needed, then run the main job on the embedded defaults"
	@echo "make test      run the default test suite (starts what it needs)"
	@echo "make test-slow run the slow tests (second CI stage)"
	@echo "make install   create .venv and the service venvs (safe to re-run)"

# Re-runs only when the project's dependency list or the installer changes.
$(STAMP): pyproject.toml infra/install.sh
	VENV=$(VENV) bash infra/install.sh
	touch $(STAMP)

install: $(STAMP)

test: install
	VENV=$(VENV) bash infra/run_tests.sh -m "not slow"

test-slow: install
	VENV=$(VENV) bash infra/run_tests.sh -m "slow"

demo: install
	$(VENV)/bin/dataengine demo --rounds 3

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b --json | tail -n 1; done

clean-work:
	rm -rf .work
