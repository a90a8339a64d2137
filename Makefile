# MPR — the two commands a user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
MPR    := $(VENV)/bin/mpr
PLUGINS := plugins/mpr_storage_s3 plugins/mpr_local plugins/mpr_lambda plugins/mpr_gcp
STAMP  := $(VENV)/.installed

.PHONY: install run test proto ui docs sample lint clean constraints

$(STAMP): pyproject.toml constraints.txt $(foreach p,$(PLUGINS),$(p)/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[test]' $(foreach p,$(PLUGINS),-e $(p))
	touch $(STAMP)

# re-pin constraints.txt to the newest releases the pyproject ranges allow (then run make test before committing)
constraints:
	rm -rf .venv-constraints && $(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/pip install -q --upgrade pip
	.venv-constraints/bin/pip install -q -e '.[test]' $(foreach p,$(PLUGINS),-e $(p))
	{ sed -n '1,2p' constraints.txt; .venv-constraints/bin/pip freeze --exclude-editable | grep -v '^-e'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .venv-constraints

install: $(STAMP) proto ui

# protobuf/gRPC code for mpr/grpc, generated with grpcio-tools' protoc (never downloaded)
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Impr/grpc=proto/mpr/v1 --python_out=. --grpc_python_out=. --pyi_out=. proto/mpr/v1/events.proto

# the browser UIs (React + Vite); rebuilt only when missing or stale
ui:
	@if [ -f ui/package.json ]; then $(MAKE) -s -C ui build; fi

sample: $(STAMP)
	$(MPR) sample

run: install
	$(MPR) migrate
	$(MPR) sample
	$(MPR) scan
	$(MPR) serve

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

docs:
	for f in docs/architecture/*.dot; do dot -Tsvg "$$f" -o "$${f%.dot}.svg"; done

lint: $(STAMP)
	$(VENV)/bin/ruff check mpr plugins tests bench testkit.py conftest.py

clean:
	rm -rf $(VENV) var ui/dist ui/node_modules
