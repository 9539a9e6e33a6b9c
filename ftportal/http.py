from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails

from .errors import ApplicationError


class AppRequest(HttpRequest):
    """A page request as our middleware leaves it; every page view also requires a login."""

    user: User
    htmx: HtmxDetails


# The largest id the database holds (ids are BigAutoField); the API's inputs use the same.
MAX_ID = 2**63 - 1


def parse_id(raw: str) -> int | None:
    """``raw`` as an id (or any whole number from 0 to ``MAX_ID``), else None.

    Not ``str.isdigit``: it accepts "²" and other digits that ``int`` refuses (a 500), and any
    length (past the database's range).
    """
    if raw.isascii() and raw.isdecimal() and int(raw) <= MAX_ID:
        return int(raw)
    return None


def query_id(request: HttpRequest, name: str) -> int | None:
    """An object id from a page's query string: None when left out or empty.

    Anything else that is not an id (``?against=abc``, ``?against=-1``, a number past the
    database's range) is a 400 page that names the parameter, not a server error.
    """
    raw = request.GET.get(name, "").strip()
    if not raw:
        return None
    value = parse_id(raw)
    if value is not None and value > 0:
        return value
    shown = raw if len(raw) <= 40 else raw[:40] + "…"
    raise ApplicationError(
        f"{name}: expected an id (a whole number from 1 to {MAX_ID}), not {shown!r}.",
        extra={"field": name},
    )
