"""The OpenAPI schema's shared parts: the one error shape, documented on every operation.

Every view answers its failures through ``ftportal.api_errors`` in one shape, so rather than
repeat the same six responses on each ``extend_schema``, this AutoSchema adds them to every
operation that does not declare its own for that status.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent

ERROR_COMPONENT = "Error"

# The body of every error: {"error": {"message": ..., ...details}}.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string", "description": "What went wrong, for people."},
                "fields": {
                    "type": "object",
                    "additionalProperties": {},
                    "description": "Invalid input only: each field's problems, by name (nested "
                    "inputs nest the same way).",
                },
                "field": {
                    "type": "string",
                    "description": "The one field at fault, where there is one.",
                },
            },
            "required": ["message"],
            # Some errors carry more, e.g. a conflict's current_status or current_answer.
            "additionalProperties": {},
        }
    },
    "required": ["error"],
}

# Every operation may answer these; what each means here.
STANDARD_ERRORS: dict[str, str] = {
    "400": "Invalid input: `error.fields` names each field and its problem (unknown keys too), "
    "or `error.field` the one at fault. Nothing was changed.",
    "401": "Not authenticated: no valid token (`Authorization: Token <key>`) or session.",
    "403": "Your role in this project does not allow this action.",
    "404": "No such object in this project, or no such project among yours.",
    "409": "Not possible in the object's current state, or it changed since you read it. "
    "Nothing was changed.",
    "429": "Too many requests; wait and try again.",
}


class ErrorDocumentingAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the standard error responses on every operation."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        component = ResolvedComponent(
            name=ERROR_COMPONENT,
            type=ResolvedComponent.SCHEMA,
            schema=ERROR_SCHEMA,
            object=ERROR_COMPONENT,
        )
        self.registry.register_on_missing(component)
        error_content = {"application/json": {"schema": component.ref}}
        for code, response in responses.items():
            # A view that names an error status of its own (a 409 with its meaning) answers it
            # in the same shape too.
            if code.startswith("4") and "content" not in response:
                response["content"] = error_content
        for code, description in STANDARD_ERRORS.items():
            responses.setdefault(code, {"content": error_content, "description": description})
        return responses
