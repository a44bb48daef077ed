# Two commands cover a fresh clone: `make demo` (local stack on real data)
# and `make test` (the whole offline suite). Both install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RATINGS ?=
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k local_api -x"`.
PYTEST_ARGS ?=

.PHONY: install demo test lint evaluate bench bench-scale clean

$(VENV)/.installed: requirements.txt src/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

install: $(VENV)/.installed node_modules/.installed

demo: install
	$(PY) -m tools.demo $(if $(RATINGS),--ratings "$(RATINGS)")

lint: install
	$(VENV)/bin/cfn-lint template.yaml

# Runs every test, the dynalite and HTTP ones included; pytest exits non-zero when a test
# fails or when none was collected, and make passes that status on.
test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Offline quality (docs/quality.md): the full model against the baselines,
# what the request path serves within its budgets, and what the local API
# serves over HTTP with the model built on dynalite.
EVAL_RATINGS = $(or $(RATINGS),../shared/datasets/ml-latest-small/ratings.csv)
evaluate: install
	$(PY) -m tools.evaluate --ratings "$(EVAL_RATINGS)" --compare
	$(PY) -m tools.evaluate --ratings "$(EVAL_RATINGS)" --mode budgeted
	$(PY) -m tools.evaluate_served --ratings "$(EVAL_RATINGS)"

# Request figures against the naive full-scan approach (docs/benchmarks.md).
bench: install
	$(PY) -m tools.bench_requests --output docs/benchmarks.md

# Request cost at 100k, 1M and 10M interactions (docs/benchmarks.md). The first run
# generates and loads the tables under .local/scale (about an hour); reruns reuse them.
bench-scale: install
	$(PY) -m tools.bench_scale --output docs/benchmarks.md

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache
