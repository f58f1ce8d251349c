# Everything runs in a local virtual environment, created on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test docs lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,docs,bench]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python examples/eight_schools.py

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

docs: $(BIN)/.installed
	$(BIN)/mkdocs build --strict --site-dir build/site

lint: $(BIN)/.installed
	$(BIN)/ruff check ppl tests examples benchmarks

bench: $(BIN)/.installed
	for script in nuts compile_cache binomial_eb vi_cone vi vi_estimators vi_iwae_layout diffusion_gmm; do $(BIN)/python benchmarks/$$script.py || exit 1; done

clean:
	rm -rf $(VENV) build site
