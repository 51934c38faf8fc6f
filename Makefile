# Boreas: `make run` starts the whole stack locally, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
# mimic (Rackspace's OpenStack mock, for the OpenStack tests) lives in a virtualenv of its own:
# its dependencies would clash with ours.
MIMIC  := .venv-mimic/bin/twistd
# The official AsyncAPI JSON Schemas (npm), to validate docs/asyncapi.json against.
ASYNCAPI_SPECS := .asyncapi-specs/node_modules/@asyncapi/specs/schemas/3.0.0-without-$$id.json

.PHONY: install run test lint format bench chaos clean subscriber

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: $(STAMP)
	$(BIN)/python deploy/local.py

$(MIMIC):
	$(PYTHON) -m venv .venv-mimic
	.venv-mimic/bin/python -m pip install --quiet mimic==2.2.0

$(ASYNCAPI_SPECS):
	npm install --silent --no-audit --no-fund --prefix .asyncapi-specs @asyncapi/specs@6.11.1

test: $(STAMP) $(MIMIC) $(ASYNCAPI_SPECS)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .venv-mimic .asyncapi-specs .pytest_cache .ruff_cache .hypothesis .bench .chaos

# Figures next to ceilings measured in the same run; wrk comes from Debian's packages.
bench: $(STAMP)
	$(BIN)/python -m tests.bench

# The fault suite, longer than the round `make test` runs: RabbitMQ and PostgreSQL restarts and
# kill -9 of each service under a steady launch load, twice over; fails on any loss.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos --rounds 2 --rate 10

subscriber: $(STAMP)
	@test -n "$(NAME)" || { echo "usage: make subscriber NAME=<name>"; exit 2; }
	$(BIN)/python -m services.notifier.subscribers create $(NAME)
