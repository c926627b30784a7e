# The two README commands: `make demo` (install + run on examples/) and `make test` (full suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_OUT := runs/demo

.PHONY: install demo test clean-demo

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) pipeline.py validate --input examples
	$(PY) pipeline.py run --input examples --out $(DEMO_OUT) --dump-crops --labels examples/labels.json
	$(PY) pipeline.py evaluate --labels examples/labels.json --pred $(DEMO_OUT)/predictions.json --out $(DEMO_OUT)/evaluation
	@echo "demo outputs: $(DEMO_OUT)/predictions.json, $(DEMO_OUT)/report.html (open it in a browser),"
	@echo "  $(DEMO_OUT)/reports/<id>.json, $(DEMO_OUT)/crops/<id>/<id>_sheet.png, $(DEMO_OUT)/evaluation/"

# pytest exits 5 when it collected no test; that must fail, never pass silently.
test: $(STAMP)
	@$(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

clean-demo:
	rm -rf $(DEMO_OUT)
