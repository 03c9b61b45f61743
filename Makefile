# make demo: set up .venv if missing, train the distractor lab family (cached), score it and
# the tiny family, write the report.
# make test: set up .venv if missing, then run the test suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_DIR ?= $(shell if [ -d ../shared/data/inverse_scaling ]; then echo ../shared/data/inverse_scaling; else echo $${INVSCALE_DATA_DIR:-$$HOME/.cache/invscale_jax/inverse_scaling}; fi)
DEMO_OUT ?= demo_out
export JAX_PLATFORMS ?= cpu
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): setup.py constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,hf]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m invscale_jax.demo --data_dir $(DATA_DIR) --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) $(DEMO_OUT)
