.PHONY: run gateway model-server test bench lint

run:  ## install everything, load the demo and its model, start web server, worker, gateway, model server
	bash scripts/run.sh

gateway:  ## the OpenAI-compatible gateway (/v1/) under uvicorn, on GATEWAY_PORT (8001)
	DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-config.settings} .venv/bin/uvicorn \
		config.asgi:application --host $${GATEWAY_HOST:-127.0.0.1} --port $${GATEWAY_PORT:-8001}

model-server:  ## the local model server (batching, the gateway's backend for local versions), on MODEL_SERVER_PORT (8002)
	.venv/bin/python -m providers.local.serve --port $${MODEL_SERVER_PORT:-8002}

test:  ## install everything, start Postgres/Redis, run linters and the whole test suite
	bash scripts/test.sh

lint:
	.venv/bin/ruff check . && .venv/bin/mypy .
