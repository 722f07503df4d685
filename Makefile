# The two commands of the README. Each sets up .venv on a fresh machine (scripts/install.sh) and runs.
PY := .venv/bin/python

.PHONY: install demo test lint zoo-docs

install:
	@bash scripts/install.sh

# the main job: embedded data, one small model trained and evaluated per task
demo: install
	$(PY) tools/demo.py

# the linter (pyproject.toml [tool.ruff]); `make test` runs it first
lint: install
	@$(PY) -m ruff check .

# the tests (CI runs exactly this): the linter, then pytest; pytest's "no tests collected" (exit 5) is not a failure
test: lint
	@$(PY) -m pytest tests -q -p no:cacheprovider --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

zoo-docs: install
	$(PY) tools/gen_model_zoo.py
