# Shortcuts for the README's two commands (scripts/demo.sh, scripts/test.sh), which
# install what they need first (root, Debian 12).
PY := .venv/bin/python

.PHONY: setup demo test lint unit bench
setup:
	@bash scripts/setup.sh

demo:
	@bash scripts/demo.sh

lint: setup
	.venv/bin/ruff check nodenetd tests bench scripts

test:
	@bash scripts/test.sh

bench: setup
	$(PY) -m bench.apply_scale
