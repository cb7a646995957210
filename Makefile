# The two commands of the README: `make serve` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
AGENTS_DIR := tests/agents
AGENTS_STAMP := $(AGENTS_DIR)/node_modules/.installed

.PHONY: serve test docs lint bench bench-compare clean chromium bytecode

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Our own bytecode, compiled ahead as a wheel install would: an editable install under
# PYTHONDONTWRITEBYTECODE=1 (set on some machines, this one included) otherwise compiles every
# module from source at each start, a third of the cold start. Stale files are recompiled.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q src/tokenrelay

# The AI SDK test project (Node), from its committed package-lock.json.
$(NODE_STAMP): $(NODE_DIR)/package-lock.json
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# The coding agents of tests/test_agents_cli.py (Claude Code, Codex CLI), from the committed lockfile.
$(AGENTS_STAMP): $(AGENTS_DIR)/package-lock.json
	npm ci --prefix $(AGENTS_DIR) --no-audit --no-fund --loglevel=error
	touch $(AGENTS_STAMP)

# The browser tests drive Debian's Chromium (never a downloaded one); install it when missing.
chromium:
	@command -v chromium >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
		|| (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium))

## Run the gateway on its embedded defaults (demo simulators, no keys needed) on :8787.
serve: $(STAMP) bytecode
	$(BIN)/tokenrelay serve

## Lint, type-check and run the whole test suite, with its coverage (the floor is pyproject's
## [tool.coverage.report] fail_under; see tests/test_coverage_floor.py).
test: $(STAMP) $(NODE_STAMP) $(AGENTS_STAMP) chromium
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src/tokenrelay tests
	$(MAKE) docs
	$(BIN)/pytest --cov --cov-report=term

## The docs site (docs/, mkdocs.yml) into site/, strict: a broken link or anchor, or a settings
## reference out of date with the code (docs/gen_config.py), fails it. Offline: nothing is fetched.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## The benchmark of BENCHMARKS.md (a few minutes; loopback only).
bench: $(STAMP) bytecode
	$(BIN)/python bench/run.py

## tokenrelay against LiteLLM and Portkey, side by side (~10 minutes; installs the peers and
## matplotlib on demand); writes bench/results/compare.json and compare.png.
bench-compare: $(STAMP) bytecode
	$(BIN)/python bench/compare.py

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache .coverage $(NODE_DIR)/node_modules $(AGENTS_DIR)/node_modules test-artifacts
