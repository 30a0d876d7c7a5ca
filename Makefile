# KeyDrop — one Makefile for the firmware, the cloud and the tools.
# Everything runs from a local virtualenv (.venv) built from requirements.txt.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TYPINGS := typings/.installed
STUBS   := micropython-esp32-stubs==1.29.0.post1
AXE     := tests/browser/node_modules/axe-core/axe.min.js

.PHONY: all venv run prod-run test test-device test-cloud check-device bench fuzz clean

all: test

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

venv: $(STAMP)

# ESP32 API stubs for the static check of device/ (kept out of the venv on purpose).
$(TYPINGS): $(STAMP)
	rm -rf typings
	$(BIN)/pip install -q --target typings $(STUBS)
	touch $@

## make run: the whole product on one machine (see README).
run: $(STAMP)
	$(BIN)/python -m tools.devstack

## make prod-run: the production profile on one machine: gunicorn, PostgreSQL, Redis, mosquitto over TLS,
## mailer, bridges (docs/operations.md).
prod-run: $(STAMP)
	$(BIN)/python -m tools.prodstack

## make test: every test — static ESP32 API check, firmware on MicroPython, cloud, end to end, browser.
test: $(STAMP) check-device $(AXE)
	tools/sysdeps test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# axe-core (npm) for the accessibility checks of the browser tests, pinned by tests/browser/package-lock.json.
$(AXE): tests/browser/package-lock.json
	tools/sysdeps test
	npm ci --prefix tests/browser --no-audit --no-fund
	touch $@

## device/ may call only what exists on an ESP32 (checked against micropython-esp32-stubs).
check-device: $(TYPINGS)
	$(BIN)/python -m mypy --config-file mypy-device.ini device

bench: $(STAMP)
	$(BIN)/python -m tools.bench

## make fuzz: a longer run of the firmware's downlink fuzzing (FUZZ_EXAMPLES batches of 50 to 100 payloads)
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-400} $(BIN)/python -m pytest -q -s -W ignore device_tests/test_fuzz_downlink.py

clean:
	rm -rf $(VENV) typings build .pytest_cache .mypy_cache
