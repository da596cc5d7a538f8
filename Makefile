# make serve: create .venv, install, start the server on http://127.0.0.1:8000 (embedded default model).
# make test:  create .venv, install everything (Debian's chromium included), lint, run the whole suite
#             (which also builds the wheel and serves from it, installed non-editable in a fresh venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve test browser bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch and torchvision in one pip call, so their builds match
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test,ray]'
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/attnlens serve

# Debian's chromium for the browser tests (Playwright drives /usr/bin/chromium; nothing is downloaded by it)
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/acmix.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build dist
