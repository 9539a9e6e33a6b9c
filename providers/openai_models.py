"""An OpenAI(-compatible) endpoint's model list (GET /v1/models), with each model's announced
shutdown date: what the catalog's daily lifecycle check reads.

OpenAI's Model object carries an optional ``shutdown_date`` ("YYYY-MM-DD", or null while
none is announced). It is read from the SDK's object whether or not the installed SDK declares
the field (older ones keep it among ``model_extra``); OpenAI-compatible servers mostly leave it
out, which reads as no date. A value that is not a date is logged and read as none.

OpenAI answers the whole list in one page; the SDK's page is iterated, so whatever pages a
later SDK follows are followed too. The SDK's own retries are off, as elsewhere in providers/;
a failure is a :class:`ModelListError` whose message never holds the key (a refused key is
named by its status only: some providers quote part of the key they refused).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import openai

from providers.base import ProviderError
from providers.openai_ft import classify_error

logger = logging.getLogger(__name__)

DOING = "listing the endpoint's models"
# Statuses that say the key itself was refused: the provider's text is left out then.
KEY_REFUSED = frozenset({401, 403})
# A list longer than this is cut here rather than read without end.
MAX_MODELS = 10_000


class ModelListError(ProviderError):
    """The model list could not be read; the message says why, never with the key."""


@dataclass(frozen=True)
class ListedModel:
    """One model of the list: its id, and the day it shuts down when one is announced."""

    id: str
    shutdown_date: dt.date | None = None


def listed_models(*, api_key: str, base_url: str, timeout: float) -> list[ListedModel]:
    """Every model ``base_url`` lists for ``api_key``, in the order listed.
    ModelListError when the list cannot be read."""
    client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
    try:
        models: list[ListedModel] = []
        for model in client.models.list():
            models.append(ListedModel(id=model.id, shutdown_date=shutdown_date_of(model)))
            if len(models) >= MAX_MODELS:
                break
        return models
    except openai.OpenAIError as error:
        # Not chained: the SDK's error may quote the key, and a logged traceback shows causes.
        raise _list_error(classify_error(DOING, error), api_key) from None
    finally:
        client.close()


def shutdown_date_of(model: object) -> dt.date | None:
    """The model's announced shutdown day, read whether or not the SDK declares the field:
    an ISO date (a date-time's day), or a Unix time; None when absent, null or unreadable."""
    value = getattr(model, "shutdown_date", None)
    if value is None:
        extra = getattr(model, "model_extra", None) or {}
        value = extra.get("shutdown_date") if isinstance(extra, dict) else None
    if value is None or value == "":
        return None
    day = _as_date(value)
    if day is None:
        logger.warning(
            "Model %s: shutdown_date %r is not a date; read as none.",
            getattr(model, "id", "?"),
            value,
        )
    return day


def _as_date(value: object) -> dt.date | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return dt.datetime.fromtimestamp(value, tz=dt.UTC).date()
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    return None


def _list_error(error: ProviderError, api_key: str) -> ModelListError:
    if error.status_code in KEY_REFUSED:
        message = f"{DOING}: the provider refused the key (HTTP {error.status_code})."
    else:
        message = str(error).replace(api_key, "[key]") if api_key else str(error)
    return ModelListError(message, status_code=error.status_code)
