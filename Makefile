# Two commands on a fresh machine: `make demo`, then `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NPROC  := $(shell nproc 2>/dev/null || echo 2)

.PHONY: install demo test test-fast test-ollama bench lint clean

install: $(STAMP)

# Re-runs only when pyproject.toml changes. llama-cpp-python compiles llama.cpp the
# first time (about 5 minutes on 2 cores); pip caches the wheel after that.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) $(BIN)/pip install --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The main job on the embedded model: no server, no download.
DEMO_ENV := LLAMAPIPE_BACKEND=embedded
demo: install
	@echo "== which models are there =="
	$(DEMO_ENV) $(BIN)/llamapipe models
	@echo "== chat with the embedded Llama (SmolLM2-135M-Instruct) =="
	$(DEMO_ENV) $(BIN)/llamapipe chat "What is the capital of France? Answer in one sentence."
	@echo "== PAL: the model writes a program, the sandbox runs it =="
	$(DEMO_ENV) $(BIN)/llamapipe pal ask "Tom has 3 apples and buys 4 more. How many apples does he have?"
	@echo "== RAG: answers from a small Korean/English corpus, every citation checked =="
	$(DEMO_ENV) $(BIN)/llamapipe rag ingest evals/datasets/rag/corpus --index .demo/index
	$(DEMO_ENV) $(BIN)/llamapipe rag ask "Who published a reading of the hyangga in 1929?" --index .demo/index
	@echo "== Eval: hyangga -> modern Korean, scored with chrF/BLEU/TER (report path printed at the end) =="
	$(DEMO_ENV) $(BIN)/llamapipe eval run evals/specs/demo.yaml --out .demo/evals

test: install
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

# The Ollama integration tests against a real server at $$OLLAMA_HOST (they skip, saying why,
# when none answers). LLAMAPIPE_TEST_OLLAMA_MODEL picks the model (default: the first one pulled).
test-ollama: install
	$(BIN)/pytest -m ollama --real-ollama

bench: install
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache bench/results
