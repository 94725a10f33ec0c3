# Two commands on a fresh machine: `make demo` and `make test`.
# Each builds the virtual environment it needs (in .venv) on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo demo-hello load test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Flotilla needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The shop on the embedded backends: a customer's journey over HTTP, then it stays up until Ctrl-C.
demo: $(BIN)/.installed
	$(BIN)/python examples/shop/demo.py

# Open-loop load on the shop's gateway, then its invariants: make load RATE=100 SECONDS=30.
# Uses the shop answering at LOAD_URL (`make demo` in another terminal), else starts one for the run.
RATE     ?= 50
SECONDS  ?= 10
LOAD_URL ?= http://127.0.0.1:8080
load: $(BIN)/.installed
	PYTHONPATH=examples/shop $(BIN)/python -m shop.load --url $(LOAD_URL) --rate $(RATE) \
		--seconds $(SECONDS) $(LOAD_ARGS)

demo-hello: $(BIN)/.installed
	$(BIN)/python examples/hello/demo.py

test: $(BIN)/.installed lint
	$(BIN)/pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python bench/rpc.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache examples/*/.flotilla bench/.venvs
