# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= demo-workspace
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## demo: the whole pipeline, offline, on embedded synthetic phantom data (labelled as such)
demo: $(STAMP)
	$(PY) examples/demo.py --workspace $(DEMO)

## test: every test, the real-data tier included (it skips when ../shared is absent, unless CI=true)
test: $(STAMP)
	$(PY) -m pytest -q -ra

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not realdata and not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check cxraug tests bench examples
	$(VENV)/bin/mypy cxraug

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(DEMO) bench/out .pytest_cache .mypy_cache .ruff_cache
