"""Run the local model server (``providers.local.model_server``) under uvicorn:

    python -m providers.local.serve --port 8002 --adapter-root var/artifacts \\
        [--model-cache var/models] [--window-ms 25] [--max-batch 16] [--max-loaded 4]

The base model is the embedded default, prepared in ``--model-cache`` (converted once, as
``manage.py prepare_models`` does). It listens on 127.0.0.1 unless told otherwise, and asks
for no key: it is the gateway's backend on the same host, not a service for applications.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from .model_server import DEFAULT_WINDOW_MS, AdapterModels, BatchingScheduler, ModelServerApp
from .weights import BASE_MODEL_KEY, ensure_base_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument(
        "--model-cache",
        type=Path,
        default=Path(os.environ.get("FTPORTAL_MODEL_CACHE", "var/models")),
    )
    parser.add_argument(
        "--adapter-root",
        type=Path,
        default=Path(os.environ.get("FTPORTAL_ARTIFACTS_DIR", "var/artifacts")),
        help="only adapters under this directory may be loaded (the artifact store)",
    )
    parser.add_argument("--window-ms", type=float, default=DEFAULT_WINDOW_MS)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-loaded", type=int, default=4, help="merged adapters kept")
    parser.add_argument("--max-adapters", type=int, default=64, help="adapters registered")
    parser.add_argument("--default-max-tokens", type=int, default=256)
    args = parser.parse_args(argv)

    models = AdapterModels(
        ensure_base_model(args.model_cache),
        base_name=BASE_MODEL_KEY,
        adapter_root=args.adapter_root,
        max_registered=args.max_adapters,
        max_loaded=args.max_loaded,
    )
    scheduler = BatchingScheduler(
        models, window_seconds=args.window_ms / 1000, max_batch=args.max_batch
    )
    app = ModelServerApp(scheduler, default_max_tokens=args.default_max_tokens)
    print(
        f"Local model server: {BASE_MODEL_KEY} on {models.device}, window {args.window_ms} ms, "
        f"batches of up to {args.max_batch}, listening on http://{args.host}:{args.port}",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
