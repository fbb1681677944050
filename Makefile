# `make test`: create .venv, install everything, run the whole suite.
# `make train`: same set-up, then the recipe's main job.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Arguments for `make train`, e.g. make train TRAIN_ARGS="--arch resnet34 --epochs 5"
TRAIN_ARGS ?=
PYTEST_ARGS ?=
# Test processes (pytest-xdist, whole files per process); 0 runs the suite in this process.
TEST_JOBS ?= 2

.PHONY: venv test test-fast lint train clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[tf,torch,onnx,dev,zoo]'
	# keras-hub, whose ResNets port reads and export writes: --no-deps, since it declares tensorflow-text,
	# which would pull the full `tensorflow` wheel over tensorflow-cpu; what it imports is in the zoo extra
	$(PY) -m pip install --quiet --no-deps "keras-hub==0.32.*"
	# Keras 2 (tf-keras), only for the tests to write genuine Keras 2 SavedModels and .h5 files in their
	# own process; the tool never imports it.  --no-deps: it would pull the full `tensorflow` wheel.
	$(PY) -m pip install --quiet --no-deps "tf-keras==$$($(PY) -c 'import importlib.metadata as m; print(".".join(m.version("tensorflow-cpu").split(".")[:2]))').*"
	touch $(STAMP)

PYTEST := $(PY) -m pytest $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadfile) --durations=25

# the whole suite (every tier), after the linter and the formatter's check
test: lint
	$(PYTEST) $(PYTEST_ARGS)

# the fast tier: the spec, golden files, the backend contract and the tiny variants' parity
test-fast: lint
	$(PYTEST) -m fast $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

train: $(STAMP)
	$(PY) -m tf_impl.train $(TRAIN_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
