# Two commands for users: `make demo` (set up everything, run the main job on the bundled sample)
# and `make test` (the whole suite). Set-up steps leave stamps in .setup-stamps/, so a second run
# skips what is done; a stamp is remade when the files it depends on change.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
RSSEG := $(VENV)/bin/rsseg
STAMPS := .setup-stamps
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_OUT ?= demo-output
PYTEST_ARGS ?=
BENCH_ARGS ?=
# Extra pip arguments, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu" for a
# CPU-only torch on machines whose pip does not already provide one (see docs/install.md).
PIP_ARGS ?=
# `make deploy` installs into this QGIS profile (default: the user's default profile).
PROFILE_DIR ?=
DIST ?= dist
# The packager is standard-library Python; the venv's (with Bandit) when it exists.
TOOL_PY := $(shell [ -x $(PY) ] && echo $(PY) || echo python3)

export QT_QPA_PLATFORM := offscreen
export HF_HUB_OFFLINE := 1

.PHONY: help setup demo test bench train-table lint clean package deploy

help:
	@echo "make demo   set up (apt QGIS, .venv, backend) and segment the bundled sample"
	@echo "make test   run the linters, then the whole test suite"
	@echo "make lint   ruff and Bandit over the sources (must stay clean)"
	@echo "make bench  print the engine benchmark table"
	@echo "make train-table  train each family on the real test rasters, print the accuracy table (about an hour)"
	@echo "make package  build dist/rs_refseg_plugin-<version>.zip (validated, backend source inside)"
	@echo "make deploy   install that zip into a QGIS profile, enable it, use .venv's backend (PROFILE_DIR=...)"

# python3-qgis for PyQGIS; the desktop (qgis) with xvfb, xauth and xdotool for the end-to-end GUI test;
# gdal-bin for the GDAL reference pipeline `make bench` measures the engine against.
APT_PACKAGES := python3-qgis python3-venv qgis xvfb xauth x11-utils xdotool gdal-bin

$(STAMPS)/apt:
	@mkdir -p $(STAMPS)
	@if [ "$$(dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | grep -c 'install ok installed')" = $(words $(APT_PACKAGES)) ]; then \
	  echo "QGIS is installed"; \
	else \
	  echo "Installing QGIS from Debian ($(APT_PACKAGES); about a minute)..."; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi
	@touch $@

$(STAMPS)/venv: $(STAMPS)/apt backend/pyproject.toml constraints.txt
	@[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@echo "Installing the backend into $(VENV) (CPU torch unless a CUDA one is already there)..."
	@$(PY) -m pip install -q $(PIP_ARGS) -c constraints.txt -e "backend[models,test,batch]"
	@touch $@

setup: $(STAMPS)/venv

demo: setup
	@$(RSSEG) demo --download --sample resources/sample/neon_osbs_rgb.tif --labels resources/sample/neon_osbs_labels.geojson --out $(DEMO_OUT)

test: setup lint
	@$(PY) -m pytest -q $(PYTEST_ARGS) tests

lint: setup
	@$(VENV)/bin/ruff check backend/src rs_refseg_plugin tools tests
	@$(VENV)/bin/bandit -q -r backend/src rs_refseg_plugin tools

bench: setup
	@$(RSSEG) bench $(BENCH_ARGS)

# docs/training-from-layers.md, "Measured on real imagery"; TRAIN_TABLE_ARGS="--quick" for a smoke run
train-table: setup
	@$(PY) tools/train_table.py $(TRAIN_TABLE_ARGS)

package:
	@$(TOOL_PY) tools/package_plugin.py package --out $(DIST)

# deploy also points the profile's backend Python (QgsSettings rs_refseg/python) at $(VENV)'s, when it
# has rsseg and the user has not chosen another interpreter there (tools/deploy_backend.py).
deploy: package
	@$(TOOL_PY) tools/package_plugin.py deploy --zip $(DIST)/rs_refseg_plugin-$$(sed -n 's/^version=//p' rs_refseg_plugin/metadata.txt | tr -d '[:space:]').zip $(if $(PROFILE_DIR),--profile "$(PROFILE_DIR)")
	@$(TOOL_PY) tools/deploy_backend.py --python "$(abspath $(PY))" $(if $(PROFILE_DIR),--profile "$(PROFILE_DIR)")

clean:
	rm -rf $(STAMPS) $(DEMO_OUT) out $(DIST)
