"""The one pagination of every API list, in a module of its own: DRF imports it from settings
while its own generic views load, so it must not import the API modules."""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class ListPagination(LimitOffsetPagination):
    """Every list endpoint answers ``{count, next, previous, results}``, paged by limit/offset."""

    # Without a default limit DRF would return the whole table when no limit is given.
    default_limit = DEFAULT_PAGE_SIZE
    max_limit = MAX_PAGE_SIZE
