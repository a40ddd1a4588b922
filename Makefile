# The two commands a new user needs: `make demo` and `make test`. Both create or refresh .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch and torchvision come first and pinned: they install from this machine's local disk.
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The page tests drive Debian's Chromium through Playwright (no browser download). Installed here when it is
# missing and this is root with apt; otherwise those tests say they were skipped and why.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	-@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else echo "no $(CHROMIUM), and no root apt to install it: the page tests will be skipped"; fi

demo: $(STAMP)
	$(BIN)/omnivis demo --out demo

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/inference.py

clean:
	rm -rf $(VENV) demo .pytest_cache
