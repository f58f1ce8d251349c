# Everything runs in a local virtual environment, created on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# A second one for the arviz 1.x path (see test-arviz1).
VENV1 ?= .venv-arviz1
BIN1 := $(VENV1)/bin

.PHONY: demo test test-arviz1 docs lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,docs,bench]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python examples/tour.py --out build/tour/index.html

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 --dist loadfile -q
	$(MAKE) --no-print-directory test-arviz1

# The arviz 1.x path (exports are xarray.DataTree): arviz 1.x needs Python >= 3.12, but its
# parts arviz-base and arviz-stats install on 3.11. This environment has them and no arviz
# 0.x: ppl's other dependencies are read from pyproject.toml, less arviz and matplotlib
# (which ppl never imports), and ppl goes in with --no-deps; --no-compile halves the install time
# (about 20 s).
$(BIN1)/.installed: pyproject.toml Makefile
	rm -rf $(VENV1)
	$(PYTHON) -m venv $(VENV1)
	$(BIN1)/python -c 'import re, tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
	  print("\n".join(d for d in deps if re.split("[^A-Za-z0-9_.-]", d)[0] not in ("arviz", "matplotlib")))' \
	  > $(VENV1)/requirements.txt
	$(BIN1)/pip install --quiet --no-compile -r $(VENV1)/requirements.txt "arviz-base[h5netcdf]" "arviz-stats[xarray]" pytest
	$(BIN1)/pip install --quiet --no-compile --no-deps -e .
	touch $@

test-arviz1: $(BIN1)/.installed
	$(BIN1)/python -m pytest -q tests/arviz1

docs: $(BIN)/.installed
	$(BIN)/mkdocs build --strict --site-dir build/site

lint: $(BIN)/.installed
	$(BIN)/ruff check ppl tests examples benchmarks

bench: $(BIN)/.installed
	for script in nuts numpyro_models compile_cache binomial_eb vi_cone vi vi_estimators vi_iwae_layout diffusion_gmm nngp; do $(BIN)/python benchmarks/$$script.py || exit 1; done

clean:
	rm -rf $(VENV) $(VENV1) build site
