"""The local model server's machine time as serving spends: what the gateway's versions on our
own hardware cost, which no token price says.

The server counts the seconds its decoding thread worked for each model since it started
(``providers.local.model_server``); a scheduled task reads them (``server_busy_read``) and
records what each adapter's count grew by since the last reading as one serving spend of
compute seconds, at the server host's hourly rate (its FTPORTAL_LOCAL_USD_PER_HOUR, else this
site's), against the version the adapter serves (``version-<id>``). The last count read is
kept in the spend's own event (``local_serving:<instance>:<model>:<milliseconds>``), so a
retried task records nothing twice and a restarted server (a new instance, counting from
zero again) starts a new series. Time the server spent waiting for requests is not counted
(the machine is the operator's either way), nor time decoding the bare base model (no
project's version asked for it).
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal

from django.conf import settings
from django.db import transaction

from ftportal.spending import SECONDS_PER_PRICE, Spend, SpendKind, SpendUnit, spend_record
from providers.base import ProviderError
from providers.local.server_metrics import ServerBusy, server_busy_read
from registry.models import ModelVersion

from .models import LedgerEntry

logger = logging.getLogger(__name__)

ADAPTER_NAME = re.compile(r"version-(\d+)")
MILLISECOND = Decimal("0.001")


def local_serving_time_record() -> int:
    """Read the site's local model server (FTPORTAL_GATEWAY_LOCAL_SERVER_URL) and record its
    machine time since the last reading; the spends recorded. Nothing when no server is
    configured; a server that cannot be read is logged and read again next time."""
    origin = str(settings.FTPORTAL_GATEWAY_LOCAL_SERVER_URL)
    if not origin:
        return 0
    try:
        busy = server_busy_read(origin, timeout=settings.FTPORTAL_PROVIDER_TIMEOUT_SECONDS)
    except ProviderError as error:
        logger.warning("Local serving time not recorded: %s", error)
        return 0
    return local_serving_spends_record(busy)


def _last_count_ms(prefix: str, version: ModelVersion) -> int:
    last = (
        LedgerEntry.objects.filter(
            model_version=version, kind=SpendKind.SERVING, event__startswith=prefix
        )
        .order_by("-id")
        .values_list("event", flat=True)
        .first()
    )
    return int(last.rsplit(":", 1)[1]) if last else 0


def local_serving_spends_record(busy: ServerBusy) -> int:
    """Record what each adapter's count grew by since the last reading (see the module)."""
    rate = busy.usd_per_hour
    source = f"FTPORTAL_LOCAL_USD_PER_HOUR on the model server's host {busy.host}"
    if rate is None:
        rate = Decimal(str(settings.FTPORTAL_LOCAL_USD_PER_HOUR))
        source = (
            f"this site's FTPORTAL_LOCAL_USD_PER_HOUR (the model server's host {busy.host} "
            "sets none)"
        )
    recorded = 0
    for name, seconds in sorted(busy.busy_seconds.items()):
        matched = ADAPTER_NAME.fullmatch(name)
        version = (
            ModelVersion.objects.select_related("registered_model").filter(pk=matched[1]).first()
            if matched
            else None
        )
        if version is None:
            continue  # the base model itself, or a version deleted since
        prefix = f"local_serving:{busy.instance}:{name}:"
        count_ms = int(Decimal(str(seconds)) / MILLISECOND)
        with transaction.atomic():
            grown_ms = count_ms - _last_count_ms(prefix, version)
            if grown_ms <= 0:
                continue
            spend_record(
                Spend(
                    project_id=version.registered_model.project_id,
                    kind=SpendKind.SERVING,
                    quantity=Decimal(grown_ms) * MILLISECOND,
                    unit=SpendUnit.COMPUTE_SECONDS,
                    price=rate,
                    price_per=SECONDS_PER_PRICE,
                    price_source=source,
                    event=f"{prefix}{count_ms}",
                    origin=f"Local model server: decoding for {version}",
                    model_version_id=version.pk,
                )
            )
        recorded += 1
    return recorded
