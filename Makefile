# seqlab: common tasks. `make install` once, then `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; users with GPUs override, e.g. `make install TORCH_SPEC='torch==2.13.0'
# TORCH_INDEX='--index-url https://download.pytorch.org/whl/cu128'`.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev,plot,tensorboard,serve

# Use the local corpus mirror beside the project when there is one (else corpora are downloaded).
MIRROR := $(abspath ../shared/corpora)
ifneq ($(wildcard $(MIRROR)),)
export SEQLAB_CORPUS_MIRROR ?= $(MIRROR)
endif

RECIPE ?= recipes/multi30k-gru-attention.toml
SEQLAB := $(BIN)/seqlab

.PHONY: install test test-slow lint format corpora prepare bench bench-quick bench-gpu clean

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
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python -m benchmarks

bench-quick: install
	$(BIN)/python -m benchmarks --quick

# On a GPU machine: Transformer-base bf16 training throughput and MFU, beam-5 decoding of test2016
# with runs/multi30k-transformer/best.pt (make train-transformer). benchmarks/transformer_base.py.
bench-gpu: install
	$(BIN)/python -m benchmarks transformer_base

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

# -- language models, BERT, several processes ---------------------------------------------------
.PHONY: train-lm train-timemachine pretrain-bert pretrain-bert-d2l finetune-sst2 train-sst2-scratch train-ddp
train-lm: install
	$(SEQLAB) train recipes/wikitext2-lstm.toml $(ARGS)
	$(SEQLAB) generate runs/wikitext2-lstm/best.pt --num 3 --seed 1 --top-p 0.9 --max-len 60
train-timemachine: install
	$(SEQLAB) train recipes/timemachine-char-gru.toml $(ARGS)
	$(SEQLAB) generate runs/timemachine-char-gru/best.pt --prefix "time traveller" --num 3 --seed 1 --max-len 100
pretrain-bert: install
	$(SEQLAB) train recipes/bert-wikitext2.toml $(ARGS)
pretrain-bert-d2l: install
	$(SEQLAB) train recipes/bert-d2l-50steps.toml $(ARGS)
finetune-sst2: install   # needs runs/bert-wikitext2/best.pt (make pretrain-bert)
	$(SEQLAB) train recipes/sst2-finetune.toml $(ARGS)
train-sst2-scratch: install   # the control: same model and vocabulary, random weights
	$(SEQLAB) train recipes/sst2-scratch.toml $(ARGS)
NPROC ?= 2
train-ddp: install   # RECIPE=recipes/x.toml NPROC=2 (gloo on CPU, NCCL on GPUs)
	$(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) -m seqlab train $(RECIPE) $(ARGS)
