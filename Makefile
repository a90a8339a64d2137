# MPR — the two commands a user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
MPR    := $(VENV)/bin/mpr
PLUGINS := plugins/mpr_storage_s3 plugins/mpr_local plugins/mpr_lambda plugins/mpr_gcp
STAMP  := $(VENV)/.installed

.PHONY: install run test proto ui docs sample lint clean

$(STAMP): pyproject.toml $(foreach p,$(PLUGINS),$(p)/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]' $(foreach p,$(PLUGINS),-e $(p))
	touch $(STAMP)

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
	$(MPR) serve

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

docs:
	for f in docs/architecture/*.dot; do dot -Tsvg "$$f" -o "$${f%.dot}.svg"; done

lint: $(STAMP)
	$(VENV)/bin/ruff check mpr plugins tests bench testkit.py conftest.py

clean:
	rm -rf $(VENV) var ui/dist ui/node_modules
