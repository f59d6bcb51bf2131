# seqlab: common tasks. `make install` once, then `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; users with GPUs override, e.g. `make install TORCH_SPEC='torch==2.13.0'
# TORCH_INDEX='--index-url https://download.pytorch.org/whl/cu128'`.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev,plot

# Use the local corpus mirror beside the project when there is one (else corpora are downloaded).
MIRROR := $(abspath ../shared/corpora)
ifneq ($(wildcard $(MIRROR)),)
export SEQLAB_CORPUS_MIRROR ?= $(MIRROR)
endif

RECIPE ?= recipes/multi30k-gru-attention.toml
SEQLAB := $(BIN)/seqlab

.PHONY: install test test-slow lint format corpora prepare bench clean

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

corpora: install
	$(SEQLAB) corpora list
	for c in $$($(SEQLAB) corpora list --names); do $(SEQLAB) corpora fetch $$c || exit 1; done

prepare: install
	$(SEQLAB) prepare $(RECIPE)

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis build dist

# -- recipes: each trains, scores the best checkpoint on test and prints a few translations ------
.PHONY: train-translation train-gru-attention train-gru train-lstm train-transformer train-reverse
train-translation: train-gru-attention
train-gru-attention: install
	$(SEQLAB) train recipes/multi30k-gru-attention.toml $(ARGS)
train-gru: install
	$(SEQLAB) train recipes/multi30k-gru.toml $(ARGS)
train-lstm: install
	$(SEQLAB) train recipes/multi30k-lstm.toml $(ARGS)
train-transformer: install
	$(SEQLAB) train recipes/multi30k-transformer.toml $(ARGS)
train-reverse: install
	$(SEQLAB) train recipes/reverse.toml $(ARGS)
