# The README's commands. Everything installs from nothing into .venv (Python 3.11).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hana-installed
LAB_JS := labextension/package.json
# llama-cpp-python compiles from source when pip has no cached wheel; skip the parts hana does
# not use (multimodal tools) and use every core.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)

.PHONY: install model test lab serve bench bench-pull lint clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml $(wildcard $(LAB_JS))
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,lab]"
	@if [ -f $(LAB_JS) ]; then $(MAKE) --no-print-directory labextension; fi
	touch $(STAMP)

.PHONY: labextension
labextension:
	cd labextension && npm ci --no-audit --no-fund && npm run build

# Register the bundled gemma3:270m in the model store (~/.hana/models unless HANA_MODELS).
model: install
	$(BIN)/hana setup

test: model
	$(BIN)/ruff check .
	$(BIN)/pytest

# The file that enables the server extension. `pip install -e` places it (hatchling's editable
# wheel carries shared-data); an environment built without it gets it here, as a wheel would put
# it (`jupyter server extension enable` refuses extensions its config does not list yet).
HANA_ENABLE := $(VENV)/etc/jupyter/jupyter_server_config.d/hana_server.json
$(HANA_ENABLE): | $(STAMP)
	install -D -m 644 server_ext/jupyter-config/jupyter_server_config.d/hana_server.json $@

lab: model $(HANA_ENABLE)
	$(BIN)/jupyter lab

serve: model
	$(BIN)/hana serve

BENCH_STAMP := $(VENV)/.hana-bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	touch $(BENCH_STAMP)

# Raw llama-cpp-python ceilings vs hana vs llama_cpp.server; writes bench/results.json (~10 min).
bench: model $(BENCH_STAMP)
	$(BIN)/python bench/run.py

# Pull throughput from a loopback registry: hana's /api/pull vs curl on the same 250 MB blob.
bench-pull: model $(STAMP)
	$(BIN)/python bench/pull.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) labextension/node_modules labextension/lib
