PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HTMX_VERSION := 4.0.1
VENDOR := web/static/vendor

.PHONY: run test check format vendor screenshots bench bench-full clean \
	translations translations-extract translations-update translations-compile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/python -m web --host 127.0.0.1 --port 8000

check: $(VENV)/.installed-test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Two workers: the tests mostly wait on servers, browsers and timers (about 9 minutes
# instead of 13 on a 2-core machine). TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2

test: check
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# The benchmark against a bare asyncio baseline (bench/README.md): quick sizes, then full.
bench: $(VENV)/.installed-test
	$(BIN)/python -m bench.run --quick

bench-full: $(VENV)/.installed-test
	$(BIN)/python -m bench.run

# Retake the README's screenshots with the browser tests (needs Debian's chromium).
screenshots: $(VENV)/.installed-test
	SALA_SCREENSHOT_DIR=docs/screenshots $(BIN)/python -m pytest -q tests/browser/test_chat.py tests/browser/test_phone.py tests/browser/test_languages.py

# The interface's words (web/locale/, Babel): extract them from the code and templates,
# merge them into each language's catalog, translate the new ones there, then compile.
# The compiled catalogs are committed, so `make run` needs none of this.
LOCALES := web/locale

translations: translations-extract translations-update translations-compile

translations-extract: $(VENV)/.installed
	$(BIN)/pybabel extract -F babel.cfg -o $(LOCALES)/messages.pot --project=Sala \
		--no-wrap --sort-by-file -k N_ .

translations-update: $(VENV)/.installed
	$(BIN)/pybabel update -i $(LOCALES)/messages.pot -d $(LOCALES) --no-wrap

translations-compile: $(VENV)/.installed
	$(BIN)/pybabel compile -d $(LOCALES) --statistics

# Refresh the vendored htmx and its SSE extension from the npm package htmx.org.
vendor:
	tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent htmx.org@$(HTMX_VERSION) >/dev/null && tar xzf htmx.org-$(HTMX_VERSION).tgz && cd - >/dev/null && cp $$tmp/package/dist/htmx.min.js $(VENDOR)/htmx-$(HTMX_VERSION).min.js && cp $$tmp/package/dist/ext/hx-sse.js $(VENDOR)/hx-sse-$(HTMX_VERSION).js && rm -rf $$tmp

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
