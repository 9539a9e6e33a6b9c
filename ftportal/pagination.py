"""The one pagination of every API list, in a module of its own: DRF imports it from settings
while its own generic views load, so it must not import the API modules."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Past this an offset only makes the database count rows for nothing (and overflows its range).
MAX_OFFSET = 2**31 - 1


def page_parameter(request: Request, name: str, *, default: int, least: int, most: int) -> int:
    """A page parameter from the query string; anything but a whole number in range is a 400
    that names it (DRF would quietly use the default instead, or clip it)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdecimal()) or not least <= int(raw) <= most:
        raise ValidationError({name: [f"Expected a whole number from {least} to {most}."]})
    return int(raw)


class ListPagination(LimitOffsetPagination):
    """Every list endpoint answers ``{count, next, previous, results}``, paged by limit/offset."""

    # Without a default limit DRF would return the whole table when no limit is given.
    default_limit = DEFAULT_PAGE_SIZE
    max_limit = MAX_PAGE_SIZE

    def get_limit(self, request: Request) -> int:
        return page_parameter(
            request, self.limit_query_param, default=DEFAULT_PAGE_SIZE, least=1, most=MAX_PAGE_SIZE
        )

    def get_offset(self, request: Request) -> int:
        return page_parameter(request, self.offset_query_param, default=0, least=0, most=MAX_OFFSET)
