# Two entry points: `make demo` (set up, then the main job on the bundled data) and
# `make test` (set up, then the test suite). Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
RUN ?= runs/demo
# FULL=1: the paper's 84-model grid instead of the reduced demo grid.
DEMO_FLAGS := $(if $(FULL),--full-grid,)

.PHONY: setup system-deps demo demo-corpus demo-audio test bench wheel clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip 'setuptools<81' wheel
	# CPU build of torch from local disk; an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	# JAX first: setup.py compiles jsae's CPU kernels against the FFI headers it ships (needs g++).
	$(PIP) install -q 'jax>=0.6'
	# webrtcvad (resemblyzer) builds from source and imports pkg_resources: no build isolation.
	$(PIP) install -q --no-build-isolation -e '.[dev,bench,embed,resemblyzer,export,describe,ray,tensorboard,wandb]'
	-$(PY) -m jsae.kernels status
	touch $@

setup: $(VENV)/.installed

# Debian packages for the audio tests and the corpus builder (speech synthesisers, their
# voices and lexicons, sox, texts, a recorded soundtrack) and Chromium for the report test.
SYSTEM_PACKAGES := g++ espeak-ng flite festival festlex-cmu festlex-poslex festvox-kallpc16k \
  festvox-kdlpc16k festvox-us-slt-hts sox libsox-fmt-base fortunes fortunes-es singularity-music chromium

system-deps:
	@dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; }

demo: setup
	$(VENV)/bin/jsae demo --out $(RUN) $(DEMO_FLAGS)

# Rebuild, in CORPUS, the audio corpus data/demo/ was exported from (data/demo/DATA_CARD.md: full, seed 0).
CORPUS ?= data/corpus
demo-corpus: system-deps setup
	$(PY) -m tools.demo_corpus --out $(CORPUS) --scale full --seed 0 --jobs 2

test: system-deps setup
	$(PY) -m pytest -q

# The descriptor columns and Opus clips of data/demo's labelled stores, from the corpus they were exported from.
demo-audio: demo-corpus
	$(VENV)/bin/jsae describe data/demo/language --audio-root $(CORPUS) --overwrite
	$(VENV)/bin/jsae describe data/demo/music --audio-root $(CORPUS) --overwrite
	$(PY) -m tools.demo_corpus.clips data/demo/language --audio-root $(CORPUS)
	$(PY) -m tools.demo_corpus.clips data/demo/music --audio-root $(CORPUS)

bench: setup
	$(PY) benchmarks/grid_train.py

# dist/jsae-*.whl with the configs and the demo data inside (setup.py bundles them into
# jsae/_bundled/); `pip install dist/jsae-*.whl` then runs `jsae demo` from any folder.
# The kernels are compiled for portable targets (x86-64-v2 and x86-64-v3, chosen at load time;
# JSAE_KERNELS_MARCH=native: for this CPU only).
wheel: setup
	rm -rf build
	$(PIP) wheel -q --no-deps --no-build-isolation -w dist .

clean:
	rm -rf runs
