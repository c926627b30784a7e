# The two README commands: `make demo` (install + run on examples/) and `make test` (full suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.installed-test-stamp
DEMO_OUT := runs/demo

.PHONY: install install-test demo test clean-demo

# The package itself (editable: the `cervspine` command runs this checkout) with its pinned runtime stack.
$(STAMP): pyproject.toml requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e .
	@touch $(STAMP)

# The same plus the test tools (the `test` extra).
$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(PY) -m pip install -e '.[test]'
	@touch $(TEST_STAMP)

install: $(STAMP)

install-test: $(TEST_STAMP)

demo: $(STAMP)
	$(VENV)/bin/cervspine validate --input examples
	$(VENV)/bin/cervspine run --input examples --out $(DEMO_OUT) --dump-crops --labels examples/labels.json --overwrite
	$(VENV)/bin/cervspine evaluate --labels examples/labels.json --pred $(DEMO_OUT)/predictions.json --out $(DEMO_OUT)/evaluation
	@echo "demo outputs: $(DEMO_OUT)/predictions.json, $(DEMO_OUT)/report.html (open it in a browser),"
	@echo "  $(DEMO_OUT)/reports/<id>.json, $(DEMO_OUT)/crops/<id>/<id>_sheet.png, $(DEMO_OUT)/evaluation/"

# pytest exits 5 when it collected no test; that must fail, never pass silently.
test: $(TEST_STAMP)
	@$(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

clean-demo:
	rm -rf $(DEMO_OUT)
