"""Read-only API: the endpoints a project's members may name in evaluations."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ftportal.api import PAGINATION_PARAMETERS, page_serializer, paginated_response
from ftportal.permissions import project_for
from ftportal.roles import Action

from .selectors import enabled_endpoints


class EndpointListApi(APIView):
    class EndpointOutput(serializers.Serializer[Any]):
        # Which variable holds the key is left out on purpose: users cannot choose it, so it
        # tells them nothing they can act on, and it maps the workers' environment for anyone
        # looking for something to read.
        name = serializers.CharField()
        kind = serializers.CharField()
        base_url = serializers.CharField(
            source="url", help_text="Where calls (and so your evaluation items) are sent."
        )
        models = serializers.ListField(
            source="model_ids",
            child=serializers.CharField(),
            help_text="The model ids it serves; empty: any.",
        )

    @extend_schema(
        operation_id="endpoints_list",
        summary="The provider endpoints admins registered, for candidates and judges",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("EndpointPage", EndpointOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        # Endpoints are site-wide, but read in a project so that membership gates them.
        project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return paginated_response(
            request=request,
            view=self,
            queryset=enabled_endpoints(),
            serializer_class=self.EndpointOutput,
        )
