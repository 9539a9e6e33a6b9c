"""Reading the local model server's machine time (its ``GET /metrics``, ``model_server``): how
long it has decoded for each model since it started, under which instance id, on which host,
at which hourly rate if its operator set one. Plain Python: the caller prices it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from providers.base import ProviderError, TransientProviderError


@dataclass(frozen=True)
class ServerBusy:
    """``busy_seconds``: model name (``version-<id>`` for an adapter, the base model's own
    name) to seconds decoded since the server started; ``instance`` changes at each start."""

    instance: str
    host: str
    usd_per_hour: Decimal | None
    busy_seconds: dict[str, float]


def server_busy_read(origin: str, *, timeout: float) -> ServerBusy:
    """The machine time of the model server at ``origin`` (its scheme, host and port).
    TransientProviderError when it cannot be reached; ProviderError when its answer is not
    the model server's."""
    url = origin.rstrip("/") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our URL
            body = json.loads(response.read())
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise TransientProviderError(f"local model server at {origin}: {error}") from error
    except json.JSONDecodeError as error:
        raise ProviderError(f"local model server at {origin}: /metrics is not JSON.") from error
    try:
        busy = {str(name): float(seconds) for name, seconds in body["busy_seconds"].items()}
        rate = body.get("usd_per_hour")
        return ServerBusy(
            instance=str(body["instance"]),
            host=str(body["host"]),
            usd_per_hour=Decimal(str(rate)) if rate else None,
            busy_seconds=busy,
        )
    except (KeyError, TypeError, ValueError, AttributeError, InvalidOperation) as error:
        raise ProviderError(
            f"local model server at {origin}: /metrics lacks its machine time ({error})."
        ) from error
