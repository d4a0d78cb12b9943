# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv with every extra the first time, then runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all]'
	touch $(STAMP)

# Until `lenspsf demo` meets its accuracy figures (see the open demo issue), the demo
# prints the charts: the first step of the whole path.
CHARTS := dots stripes edges noise combo
demo: $(STAMP)
	mkdir -p out/charts
	for kind in $(CHARTS); do \
	  $(VENV)/bin/lenspsf targets make $$kind --paper A3 --landscape -o out/charts/$$kind.pdf || exit 1; \
	done
	@echo "made out/charts/{$$(echo $(CHARTS) | tr ' ' ',')}.pdf, each with its layout .json beside it;"
	@echo "print them at 100 % (no scaling) and check the 100 mm scale bar with a ruler."

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf out .pytest_cache
