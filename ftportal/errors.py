"""One application error type; views and the API map it to one error shape."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A request that cannot be done as asked; ``message`` is meant for the user."""

    status_code = 400

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class PermissionDeniedError(ApplicationError):
    status_code = 403


class ConflictError(ApplicationError):
    """The object is not in a state that allows this action."""

    status_code = 409
