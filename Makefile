# embedq: `make demo` and `make test` are the two set-up commands; both create .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test unit lint services bench chaos clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# A pinned CPU build first, so that the project's torch range installs nothing bigger.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/embedq index demo/corpus.jsonl --collection demo
	@while IFS= read -r q; do \
		[ -n "$$q" ] || continue; \
		printf '\n$$ embedq search demo "%s" -k 3\n' "$$q"; \
		$(BIN)/embedq search demo "$$q" -k 3; \
	done < demo/queries.txt

services:
	scripts/services.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: install
	$(PY) -m pytest -q tests/unit

test: install services lint
	$(PY) -m pytest -q -ra

bench: install services
	$(PY) -m bench $(ARGS)

# kill -9 of embed workers and the index writer during a job, many times; see scripts/chaos.py.
chaos: install services
	$(PY) scripts/chaos.py --kills 40 --docs 200 $(ARGS)

clean:
	rm -rf $(VENV) embedq-data .pytest_cache .mypy_cache .ruff_cache
