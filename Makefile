# FlexNet Lab. Works as root without sudo; `sudo make ...` works too.
# See README.md. Variables: TOPO (lab, check), PYTEST_ARGS (test).

TOPO ?= leaf-spine
PYTEST_ARGS ?=
VENV := .venv/bin

.PHONY: help setup lab demo test check clean bench

help:
	@echo "make setup   install system packages and .venv (as root, or with sudo)"
	@echo "make lab     bring up TOPO (default leaf-spine) and open the prompt [root]"
	@echo "make demo    run scenarios/default.yaml [root]"
	@echo "make test    run the tests (PYTEST_ARGS='-m \"not root\"' for a subset)"
	@echo "make check   check TOPO against this machine"
	@echo "make clean   remove everything a lab run left behind [root]"
	@echo "make bench   run benchmarks/bringup.py [root]"

setup:
	bash scripts/setup.sh

lab:
	$(VENV)/flexnet up $(TOPO)

demo:
	$(VENV)/flexnet run scenarios/default.yaml

test:
	$(VENV)/python -m pytest tests $(PYTEST_ARGS)

check:
	$(VENV)/flexnet check $(TOPO)

clean:
	$(VENV)/flexnet clean

bench:
	$(VENV)/python benchmarks/bringup.py
