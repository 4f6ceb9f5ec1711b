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

# Every query in one process: the model loads once.
demo: install
	$(BIN)/embedq index demo/corpus.jsonl --collection demo
	$(BIN)/embedq search demo --queries demo/queries.txt -k 3
	@printf '\nNext, try:\n'
	@printf '  source $(VENV)/bin/activate                  # puts embedq on PATH in this shell\n'
	@printf '  embedq search demo "your own question" -k 5\n'
	@printf '  embedq cluster demo --k-range 8-14 --plot clusters.png\n'
	@printf '  embedq index YOUR_FOLDER --collection mine   # .txt/.md files, JSONL or CSV\n'

services:
	scripts/services.sh

# mypy reads the sources as the installed package has them: build/typecheck/embedq/{api,...}
# (hard links, laid anew each run, so new and removed files are seen).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf build/typecheck && mkdir -p build/typecheck/embedq
	for p in api tasks workers storage; do cp -rl $$p build/typecheck/embedq/$$p; done
	$(BIN)/mypy
	$(BIN)/lint-imports

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
