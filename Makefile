.PHONY: run gateway test bench lint

run:  ## install everything, load the demo, start web server + worker
	bash scripts/run.sh

gateway:  ## the OpenAI-compatible gateway (/v1/) under uvicorn, on GATEWAY_PORT (8001)
	DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-config.settings} .venv/bin/uvicorn \
		config.asgi:application --host $${GATEWAY_HOST:-127.0.0.1} --port $${GATEWAY_PORT:-8001}

test:  ## install everything, start Postgres/Redis, run linters and the whole test suite
	bash scripts/test.sh

lint:
	.venv/bin/ruff check . && .venv/bin/mypy .
