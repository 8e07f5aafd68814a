# Set-up is part of every target: a fresh machine needs nothing but `make`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The embedded default: the static catalog and zones shipped in zones/.
RUN_ARGS ?= --listen 127.0.0.1:5353 --listen [::1]:5353

.PHONY: run test lint unit integration bench

# setup.py builds the compiled UDP helper (gateway/server/_batchio.c) in place;
# where it cannot be built, the install goes on without it (the Python loop runs).
$(STAMP): pyproject.toml setup.py gateway/server/_batchio.c
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m gateway $(RUN_ARGS) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway harness tests bench
	$(VENV)/bin/ruff format --check gateway harness tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict harness tests bench

# Everything: system packages, the Consul test agent, lint, types, all tests.
test: $(STAMP)
	tools/system-deps.sh
	$(MAKE) lint
	CONSUL_BIN=$$(tools/build-consul.sh) && export CONSUL_BIN && $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider tests/unit $(PYTEST_ARGS)

bench: $(STAMP)
	tools/system-deps.sh
	CONSUL_BIN=$$(tools/build-consul.sh) && export CONSUL_BIN && $(PY) -m bench $(BENCH_ARGS)
