.PHONY: run test bench lint

run:  ## install everything, load the demo, start web server + worker
	bash scripts/run.sh

test:  ## install everything, start Postgres/Redis, run linters and the whole test suite
	bash scripts/test.sh

lint:
	.venv/bin/ruff check . && .venv/bin/mypy .
