# make demo: set up .venv with what the demo needs (no torch/transformers), train the
#            distractor lab family (cached), score it and the tiny family, write the report.
# make test: add the test extras to .venv (pytest, the GCS emulator, torch and transformers
#            for the Hugging Face parity tests), then run the test suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.installed-demo
# .installed: everything, the demo's packages and the test extras.
TEST_STAMP := $(VENV)/.installed
DATA_DIR ?= $(shell if [ -d ../shared/data/inverse_scaling ]; then echo ../shared/data/inverse_scaling; else echo $${INVSCALE_DATA_DIR:-$$HOME/.cache/invscale_jax/inverse_scaling}; fi)
DEMO_OUT ?= demo_out
export JAX_PLATFORMS ?= cpu
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: demo test setup clean

setup: $(TEST_STAMP)

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(DEMO_STAMP): setup.py constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt -e .
	touch $(DEMO_STAMP)

$(TEST_STAMP): setup.py constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(DEMO_STAMP) $(TEST_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/python -m invscale_jax.demo --data_dir $(DATA_DIR) --out $(DEMO_OUT)

test: $(TEST_STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) $(DEMO_OUT)
