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

.PHONY: install model test lab serve bench bench-pull bench-remote lint clean fuzz soak install-cuda gpu-bundle

install: $(STAMP) labextension

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The editable install's build hook (hatch-jupyter-builder) also builds labextension/ when it
# is older than its sources; the rules below do the same, so a later change rebuilds it.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,lab]"
	touch $(STAMP)

# The JupyterLab extension (TypeScript) is built into labextension/dist: the wheel ships that
# folder prebuilt, and .venv links to it (like `jupyter labextension develop`), so a rebuild
# shows in Lab on reload. Node is needed only here.
LAB_SOURCES := $(wildcard labextension/src/*.ts labextension/style/*) $(LAB_JS) labextension/tsconfig.json
LAB_MODULES := labextension/node_modules/.package-lock.json
LAB_BUILT   := labextension/dist/package.json
LAB_LINK    := $(VENV)/share/jupyter/labextensions/hana-jupyter

$(LAB_MODULES): labextension/package-lock.json
	cd labextension && npm ci --no-audit --no-fund

$(LAB_BUILT): $(LAB_MODULES) $(LAB_SOURCES) | $(STAMP)
	cd labextension && PATH="$(CURDIR)/$(BIN):$$PATH" npm run build:prod

.PHONY: labextension browser
labextension: $(LAB_BUILT)
	@if [ "$$(readlink $(LAB_LINK))" != "$(CURDIR)/labextension/dist" ]; then \
	  rm -rf $(LAB_LINK) && mkdir -p $(dir $(LAB_LINK)) && \
	  ln -s $(CURDIR)/labextension/dist $(LAB_LINK); fi

# The browser the end-to-end tests drive: Debian's chromium (browser downloads are impossible
# here, and Playwright drives it through `executable_path`). Installing it needs root.
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

browser: $(CHROMIUM)

# Register the bundled gemma3:270m in the model store (~/.hana/models unless HANA_MODELS).
model: install
	$(BIN)/hana setup

# Unit tests of the extension's TypeScript (node's test runner), then pytest: the Python suite,
# the JupyterLab end-to-end tests in headless chromium and the wheel install test.
test: model labextension browser
	$(BIN)/ruff check .
	cd labextension && npm test
	$(BIN)/pytest

# The file that enables the server extension. `pip install -e` places it (hatchling's editable
# wheel carries shared-data); an environment built without it gets it here, as a wheel would put
# it (`jupyter server extension enable` refuses extensions its config does not list yet).
HANA_ENABLE := $(VENV)/etc/jupyter/jupyter_server_config.d/hana_server.json
$(HANA_ENABLE): | $(STAMP)
	install -D -m 644 server_ext/jupyter-config/jupyter_server_config.d/hana_server.json $@

# JupyterLab refuses to run as root unless told to; containers (and fresh cloud machines) run
# as root, so `make lab` allows it there, and only there: nothing else changes Lab's default.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: model labextension $(HANA_ENABLE)
	$(BIN)/jupyter lab $(ALLOW_ROOT)

serve: model
	$(BIN)/hana serve

BENCH_STAMP := $(VENV)/.hana-bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	touch $(BENCH_STAMP)

# Raw llama-cpp-python ceilings vs hana vs llama_cpp.server, and hana vs llama.cpp's own
# llama-bench and llama-server, built once (cached in ~/.cache/hana-bench) from the source
# llama-cpp-python vendors; writes bench/results.json (~15 min, plus the first build).
bench: model $(BENCH_STAMP)
	$(BIN)/python bench/llama_cpp_build.py
	$(BIN)/python bench/run.py

# Fuzz every API operation from its OpenAPI document against a real `hana serve` with three tiny
# models; writes bench/fuzz.json (cases, 5xx, hangs). FUZZ_EXAMPLES cases per operation and mode.
FUZZ_EXAMPLES ?= 100
fuzz: install
	$(BIN)/python bench/fuzz.py --examples $(FUZZ_EXAMPLES)

# Bounded soak (not part of `make test`): 16 clients, 2,000+ requests over three tiny models with
# cancels and malformed requests; checks slots, processes, descriptors, RSS and loop latency.
# Writes bench/soak.json.
soak: install
	$(BIN)/python bench/soak.py

# Pull throughput from a loopback registry: hana's /api/pull vs curl on the same 250 MB blob.
bench-pull: model $(STAMP)
	$(BIN)/python bench/pull.py

# GPU offload (docs: README "GPU"): rebuild llama-cpp-python with llama.cpp's CUDA backend
# (needs the CUDA toolkit; ~10 min). Not part of `install`: the default build is CPU-only.
GPU_CMAKE_ARGS ?= -DGGML_CUDA=on
install-cuda: $(STAMP)
	CMAKE_ARGS="$(GPU_CMAKE_ARGS) $(CMAKE_ARGS)" $(BIN)/pip install --force-reinstall --no-deps \
	  --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==0.3.36"

# What bench/gpu_device.py needs on a GPU machine without network, in .make/gpu-bundle (44 MiB).
gpu-bundle: $(STAMP)
	PYTHON=$(BIN)/python sh bench/gpu_bundle.sh

# Remote models: streaming through hana vs the same upstream direct (tokens/s, time to first
# token); writes bench/remote.json.
bench-remote: model $(STAMP)
	$(BIN)/python bench/remote.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd labextension && npm run lint

clean:
	rm -rf $(VENV) labextension/node_modules labextension/lib labextension/dist \
	  labextension/build-test labextension/tsconfig.tsbuildinfo
