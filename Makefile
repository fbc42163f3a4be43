# Two entry points: `make demo` and `make test`. Both build .venv on first use.
# `make test` is the fast tier (minutes); `make test-slow` runs the heavy end-to-end tests
# (marked slow), which CI runs too (.ci/run); `make test-all` runs both.
# `make lint` runs ruff (pyflakes, import order) and mypy (config in pyproject.toml).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORK ?= work
PRESET ?= small
SEED ?= 0
LINT_PATHS ?= .

.PHONY: demo test test-fast test-slow test-all lint venv freeze clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.demo --work_dir=$(WORK) --preset=$(PRESET) --seed=$(SEED) $(DEMO_FLAGS)

test: $(STAMP)
	$(PY) -m pytest tests -m "not slow" --durations=10

test-fast: test

test-slow: $(STAMP)
	$(PY) -m pytest tests -m slow --durations=15

test-all: $(STAMP)
	$(PY) -m pytest tests --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/mypy

freeze: $(STAMP)
	{ grep '^#' constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(WORK) build *.egg-info
