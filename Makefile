# Every target bootstraps .venv itself; nothing needs to be installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml 2>/dev/null | cut -c1-12)

.PHONY: venv demo test bench lint soak clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/tsgate demo

test: $(STAMP)
	bash scripts/with-services.sh $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP)
	bash scripts/bench-deps.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/micro.py
	$(BIN)/python bench/captcha_bench.py
	$(BIN)/python bench/moderation_bench.py
	$(BIN)/python bench/followers_bench.py

lint: $(STAMP)
	$(BIN)/ruff check gateway authn ratelimit moderation captcha followers review policies tests bench
	$(BIN)/mypy

soak: $(STAMP)
	bash scripts/bench-deps.sh
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
