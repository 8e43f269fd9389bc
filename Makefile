# Two entry points: `make demo` (set up, then the main job on the bundled data) and
# `make test` (set up, then the test suite). Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
RUN ?= runs/default

.PHONY: setup system-deps demo test bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip 'setuptools<81' wheel
	# CPU build of torch from local disk; an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	# webrtcvad (resemblyzer) builds from source and imports pkg_resources: no build isolation.
	$(PIP) install --no-build-isolation -e '.[dev,bench,embed,resemblyzer]'
	touch $@

setup: $(VENV)/.installed

# Speech synthesisers and sox for the audio tests (Debian; needs root).
system-deps:
	@if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng sox >/dev/null; fi

demo: setup
	$(VENV)/bin/jsae sweep configs/default.yaml --out $(RUN)

test: setup system-deps
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/grid_train.py

clean:
	rm -rf runs
