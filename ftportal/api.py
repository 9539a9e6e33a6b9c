"""API for projects, plus the small helpers every app's api.py shares.

Each API view does one thing: check the caller's role in the project first (``project_for``),
load objects scoped to that project, validate input with its own nested serializer, call a
service or selector, and shape the output with its own nested serializer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Model, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotAuthenticated
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import Membership
from .permissions import project_for
from .roles import Action

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

PAGINATION_PARAMETERS = [
    OpenApiParameter("limit", int, description=f"Page size (default {DEFAULT_PAGE_SIZE})."),
    OpenApiParameter("offset", int, description="How many rows to skip."),
]


def acting_user(request: Request) -> User:
    """The authenticated caller, typed for services that record who did what."""
    user = request.user
    # IsAuthenticated already ran; this only narrows the type for the services.
    if isinstance(user, AnonymousUser) or not user.is_authenticated:
        raise NotAuthenticated()
    return user


class _LimitOffset(LimitOffsetPagination):
    # Without a default limit DRF would return the whole table when no limit is given.
    default_limit = DEFAULT_PAGE_SIZE
    max_limit = MAX_PAGE_SIZE


def paginated_response(
    *,
    request: Request,
    view: APIView,
    queryset: QuerySet[Any],
    serializer_class: type[serializers.Serializer[Any]],
) -> Response:
    """``{count, next, previous, results}`` for one limit/offset page of ``queryset``."""
    paginator = _LimitOffset()
    page: Sequence[Model] = paginator.paginate_queryset(queryset, request, view=view) or []
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


def page_serializer(name: str, item: type[serializers.Serializer[Any]]) -> type[Any]:
    """A schema-only serializer describing one page of ``item`` rows."""
    fields = {
        "count": serializers.IntegerField(),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": item(many=True),
    }
    return type(name, (serializers.Serializer,), fields)


class ProjectListApi(APIView):
    class ProjectOutput(serializers.Serializer[Any]):
        id = serializers.IntegerField(source="project.id")
        name = serializers.CharField(source="project.name")
        description = serializers.CharField(source="project.description")
        created_at = serializers.DateTimeField(source="project.created_at")
        role = serializers.CharField()

    @extend_schema(
        operation_id="projects_list",
        summary="The projects you are a member of, with your role in each",
        responses=ProjectOutput(many=True),
    )
    def get(self, request: Request) -> Response:
        # No project_for here: the list is by construction only the caller's memberships.
        memberships = Membership.objects.filter(user=acting_user(request)).select_related("project")
        return Response(self.ProjectOutput(memberships.order_by("project__name"), many=True).data)


class ProjectDetailApi(APIView):
    class ProjectDetailOutput(serializers.Serializer[Any]):
        id = serializers.IntegerField()
        name = serializers.CharField()
        description = serializers.CharField()
        created_at = serializers.DateTimeField()
        role = serializers.CharField()

    @extend_schema(operation_id="projects_retrieve", responses=ProjectDetailOutput)
    def get(self, request: Request, project_id: int) -> Response:
        project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        data = {
            "id": project.pk,
            "name": project.name,
            "description": project.description,
            "created_at": project.created_at,
            "role": role,
        }
        return Response(self.ProjectDetailOutput(data).data)
