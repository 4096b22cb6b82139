# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Machines without an NVIDIA driver get the CPU build of torch (2.13.0 is the CPU wheel here, seconds to
# install); machines with one get PyPI's default CUDA build. Override with `make TORCH=... demo`.
TORCH  ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch,torch==2.13.0)

.PHONY: demo test bench setup ffmpeg chromium clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	# Lightricks' reference model code, a test oracle; without its dependencies, which would pin torch 2.7.
	$(BIN)/python -m pip install -q --no-deps "ltx-core==1.0.0" "einops>=0.8"
	touch $@

# ffprobe/ffmpeg binaries: the tests compare our probe with ffprobe, and the benchmark times it.
ffmpeg:
	@command -v ffprobe >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing ffmpeg (apt)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	  else echo "ffprobe not found: install ffmpeg (e.g. sudo apt-get install ffmpeg)"; exit 1; fi; }

# Debian's chromium for the browser test of the Prefect UI (playwright drives it; no browser download).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium (apt)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: install it (e.g. sudo apt-get install chromium)"; exit 1; fi; }

demo: setup
	$(BIN)/ltx2 demo-data datasets/demo
	$(BIN)/ltx2 run

test: setup ffmpeg chromium
	$(BIN)/python -m pytest -q

bench: setup ffmpeg
	$(BIN)/python bench/probe_bench.py

clean:
	rm -rf $(VENV) ltx2-store datasets/demo output/demo
