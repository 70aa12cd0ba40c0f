# execstate: `make demo`, `make test`, `make bench`, `make docs`. Each creates .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench
DOCS_STAMP := $(VENV)/.installed-docs
CHAOS_STAMP := $(VENV)/.installed-chaos

.PHONY: demo test bench chaos docs venv tools clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# the docs extra too: the docs test (tests/docs) builds the site with mkdocs --strict
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $@

$(DOCS_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

$(CHAOS_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install -q -e '.[test,docs,chaos]'
	touch $@

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

venv: $(STAMP)

# promtool (Debian's prometheus package) checks and unit-tests the alert rules in `make test`
tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's prometheus package (promtool)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "promtool not found: install Debian's prometheus package (sudo apt-get install prometheus)"; exit 1; fi; }

demo: $(STAMP)
	$(VENV)/bin/execstate demo

test: $(STAMP) tools
	$(PY) -m pytest

# every fault scenario against the simulated broker (a fast subset runs in `make test`)
chaos: $(CHAOS_STAMP) tools
	$(PY) -m chaos.run

# the documentation site (docs/, mkdocs.yml) into build/site, offline; a warning fails it
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(BENCH_STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) state .pytest_cache .hypothesis bench/results
