"""API for projects, plus the small helpers every app's api.py shares.

Each API view does one thing: check the caller's role in the project first (``project_for``),
load objects scoped to that project, validate input with its own nested serializer, call a
service or selector, and shape the output with its own nested serializer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from django.contrib.auth.models import AnonymousUser, User
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import Model, QuerySet
from django.http import QueryDict
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import http
from .models import Membership, Project
from .pagination import DEFAULT_PAGE_SIZE, MAX_OFFSET, MAX_PAGE_SIZE, ListPagination
from .permissions import project_for, refuse_unless_may_create_projects
from .roles import Action, Role
from .selectors import audit_entries, project_member, project_members
from .services import (
    MemberSpec,
    member_add,
    member_create,
    member_remove,
    member_role_change,
    project_create,
    project_update,
)

PAGINATION_PARAMETERS = [
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        description=f"Page size (default {DEFAULT_PAGE_SIZE}, at most {MAX_PAGE_SIZE}).",
    ),
    OpenApiParameter(
        "offset",
        {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
        description="How many rows to skip.",
    ),
]


# The largest id the database holds (ids are BigAutoField) and, for any other whole number an
# input does not bound itself, the range of the database's integer columns: a number past these
# is refused with a 400 that names the field, instead of failing in the database as a 500.
MAX_ID = http.MAX_ID
MAX_INTEGER = 2**31 - 1
MIN_INTEGER = -(2**31)


class IdField(serializers.IntegerField):
    """An object's id in an input: a whole number from 1 to ``MAX_ID``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


def _bound_integers(field: serializers.Field[Any, Any, Any, Any]) -> None:
    """Gives an IntegerField (also as a list's or dict's child) the database's range where it
    declares none, so no input number can overflow a column or a query parameter."""
    if isinstance(field, serializers.ListField | serializers.DictField):
        _bound_integers(field.child)
        return
    if not isinstance(field, serializers.IntegerField):
        return
    if field.max_value is None:
        field.max_value = MAX_INTEGER
        message = field.error_messages["max_value"].format(max_value=MAX_INTEGER)
        field.validators.append(MaxValueValidator(MAX_INTEGER, message=message))
    if field.min_value is None:
        field.min_value = MIN_INTEGER
        message = field.error_messages["min_value"].format(min_value=MIN_INTEGER)
        field.validators.append(MinValueValidator(MIN_INTEGER, message=message))


def acting_user(request: Request) -> User:
    """The authenticated caller, typed for services that record who did what."""
    user = request.user
    # IsAuthenticated already ran; this only narrows the type for the services.
    if isinstance(user, AnonymousUser) or not user.is_authenticated:
        raise NotAuthenticated()
    return user


class InputSerializer(serializers.Serializer[Any]):
    """The base of every API input serializer, body or query string: strict about keys.

    A key the serializer does not declare is refused with a 400 that names it, instead of being
    dropped: a misspelt ``filters`` for ``filter`` must not turn a narrow bulk action into one
    on everything. Nested input serializers derive from this too, so their keys are checked at
    every depth, and the error names the path (``{"filter": {"stauts": [...]}}``).

    Every whole number it reads is bounded (``IdField`` for ids, the database's integer range
    for the rest), and a parameter sent empty in a query string or form is refused rather than
    read as left out: neither may reach the database as a 500.
    """

    # Keys a query string may carry besides the declared ones (a list's page parameters).
    tolerated_keys: ClassVar[frozenset[str]] = frozenset()

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        for field in fields.values():
            _bound_integers(field)
        return fields

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, QueryDict):
            # DRF reads an empty value in a query string or form as "not sent"; `status=` is a
            # value, and not one of the allowed ones, so it is refused like any other.
            blank = sorted(
                name
                for name, field in self.fields.items()
                if data.get(name, None) == "" and not getattr(field, "allow_blank", False)
            )
            if blank:
                raise serializers.ValidationError(
                    {
                        name: ["An empty value is not allowed; leave the parameter out."]
                        for name in blank
                    }
                )
        if isinstance(data, Mapping):
            # A read-only field is output, so sending it is as wrong as sending a typo.
            accepted = sorted(name for name, field in self.fields.items() if not field.read_only)
            known = set(accepted) | self.tolerated_keys
            unknown = sorted(str(key) for key in data if key not in known)
            if unknown:
                expected = ", ".join(accepted) or "nothing"
                raise serializers.ValidationError(
                    {key: [f"Unknown field '{key}'; expected: {expected}."] for key in unknown}
                )
        return super().to_internal_value(data)


class ListQueryInput(InputSerializer):
    """Base of a list endpoint's filter: its own keys plus the page parameters."""

    tolerated_keys = frozenset({"limit", "offset"})


class NoInput(InputSerializer):
    """For actions that take no body: anything sent is refused rather than ignored."""


def refuse_any_input(request: Request) -> None:
    """Checks that an action taking no parameters was sent none."""
    NoInput(data=request.data).is_valid(raise_exception=True)


def paginated_response(
    *,
    request: Request,
    view: APIView,
    queryset: QuerySet[Any] | Sequence[Any],
    serializer_class: type[serializers.Serializer[Any]],
    query: type[InputSerializer] | None = ListQueryInput,
) -> Response:
    """``{count, next, previous, results}`` for one limit/offset page of ``queryset``.

    ``query`` checks the query string (by default: page parameters only); pass None when the
    view has already validated it with its own ``ListQueryInput``.
    """
    if query is not None:
        query(data=request.query_params).is_valid(raise_exception=True)
    paginator = ListPagination()
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


class MemberOutput(serializers.Serializer[Any]):
    user = serializers.IntegerField(source="user_id")
    username = serializers.CharField(source="user.username")
    role = serializers.ChoiceField(choices=Role.choices)
    role_label = serializers.CharField(source="get_role_display")


class ProjectDetailOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    default_system_prompt = serializers.CharField(
        help_text="Put in front of imported examples that bring no system prompt of their own, "
        "unless the upload names another; empty for none."
    )
    created_at = serializers.DateTimeField()
    role = serializers.CharField(help_text="Your role in the project.")


def project_detail_data(project: Project, role: str) -> dict[str, Any]:
    return ProjectDetailOutput(
        {
            "id": project.pk,
            "name": project.name,
            "description": project.description,
            "default_system_prompt": project.default_system_prompt,
            "created_at": project.created_at,
            "role": role,
        }
    ).data


class ProjectMemberInput(InputSerializer):
    """One member of a new project: an existing user, by username or by id, and a role."""

    username = serializers.CharField(
        required=False, max_length=150, help_text="The user's name; or give user."
    )
    user = IdField(required=False, help_text="The user's id; or give username.")
    role = serializers.ChoiceField(choices=Role.choices)


class ProjectListApi(APIView):
    class ProjectOutput(serializers.Serializer[Any]):
        id = serializers.IntegerField(source="project.id")
        name = serializers.CharField(source="project.name")
        description = serializers.CharField(source="project.description")
        created_at = serializers.DateTimeField(source="project.created_at")
        role = serializers.CharField()

    class ProjectCreateInput(InputSerializer):
        name = serializers.CharField(
            max_length=200, help_text="Unique among the site's projects, case aside."
        )
        description = serializers.CharField(required=False, allow_blank=True, default="")
        default_system_prompt = serializers.CharField(
            required=False,
            allow_blank=True,
            default="",
            help_text="Put in front of imported examples that bring no system prompt of their "
            "own; empty for none.",
        )
        members = ProjectMemberInput(
            many=True,
            required=False,
            help_text="Existing users and their roles, each with username or user; you "
            "become the project's admin.",
        )

    class ProjectCreatedOutput(ProjectDetailOutput):
        members = MemberOutput(many=True)

    @extend_schema(
        operation_id="projects_list",
        summary="The projects you are a member of, with your role in each",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("ProjectPage", ProjectOutput),
    )
    def get(self, request: Request) -> Response:
        # No project_for here: the list is by construction only the caller's memberships.
        memberships = Membership.objects.filter(user=acting_user(request)).select_related("project")
        return paginated_response(
            request=request,
            view=self,
            queryset=memberships.order_by("project__name", "id"),
            serializer_class=self.ProjectOutput,
        )

    @extend_schema(
        operation_id="projects_create",
        summary="Create a project with its members and default system prompt; you become its "
        "admin (site staff and users with the add-project permission only; 403 for others)",
        request=ProjectCreateInput,
        responses={201: ProjectCreatedOutput},
    )
    def post(self, request: Request) -> Response:
        creator = acting_user(request)
        # First, as project_for is in project views: who may not create learns nothing more.
        refuse_unless_may_create_projects(creator)
        payload = self.ProjectCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        project = project_create(
            creator=creator,
            name=data["name"],
            description=data["description"],
            default_system_prompt=data["default_system_prompt"],
            members=[
                MemberSpec(
                    role=member["role"],
                    username=member.get("username", ""),
                    user_id=member.get("user"),
                )
                for member in data.get("members", [])
            ],
        )
        body = {
            **project_detail_data(project, Role.ADMIN.value),
            "members": MemberOutput(project_members(project), many=True).data,
        }
        return Response(body, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    class ProjectUpdateInput(InputSerializer):
        name = serializers.CharField(required=False, max_length=200)
        description = serializers.CharField(required=False, allow_blank=True)
        default_system_prompt = serializers.CharField(
            required=False,
            allow_blank=True,
            help_text="Put in front of examples imported from now on that bring no system "
            "prompt of their own; empty for none. Examples imported before keep theirs.",
        )

    @extend_schema(operation_id="projects_retrieve", responses=ProjectDetailOutput)
    def get(self, request: Request, project_id: int) -> Response:
        project, role = project_for(user=request.user, project_id=project_id, action=Action.VIEW)
        return Response(project_detail_data(project, role))

    @extend_schema(
        operation_id="projects_update",
        summary="Change the project's name, description or default system prompt (admins only)",
        request=ProjectUpdateInput,
        responses=ProjectDetailOutput,
    )
    def patch(self, request: Request, project_id: int) -> Response:
        project, role = project_for(
            user=request.user, project_id=project_id, action=Action.EDIT_PROJECT
        )
        payload = self.ProjectUpdateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        project = project_update(project=project, **payload.validated_data)
        return Response(project_detail_data(project, role))


# --- members ----------------------------------------------------------------------------------


class NewMemberOutput(MemberOutput):
    generated_password = serializers.CharField(
        help_text="Only when the server chose the password: shown this once, never again."
    )


class AuditEntryOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    actor = serializers.CharField(source="actor.username")
    action = serializers.CharField()
    action_label = serializers.CharField(source="get_action_display")
    member = serializers.CharField(source="member.username")
    before = serializers.DictField(child=serializers.CharField())
    after = serializers.DictField(child=serializers.CharField())
    created_at = serializers.DateTimeField()


class MemberCollectionApi(APIView):
    class MemberAddInput(InputSerializer):
        username = serializers.CharField(max_length=150)
        role = serializers.ChoiceField(choices=Role.choices)
        create_user = serializers.BooleanField(
            required=False,
            default=False,
            help_text="Create a new user with this name instead of adding an existing one.",
        )
        password = serializers.CharField(
            required=False,
            allow_blank=True,
            default="",
            trim_whitespace=False,
            write_only=True,
            help_text="For a new user; left out, one is generated and answered once.",
        )

    @extend_schema(
        operation_id="members_list",
        summary="The project's members and their roles (admins only)",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("MemberPage", MemberOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_MEMBERS
        )
        return paginated_response(
            request=request,
            view=self,
            queryset=project_members(project),
            serializer_class=MemberOutput,
        )

    @extend_schema(
        operation_id="members_add",
        summary="Add an existing user, or create a new one, with a role (audited)",
        request=MemberAddInput,
        responses={201: NewMemberOutput},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_MEMBERS
        )
        payload = self.MemberAddInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        actor = acting_user(request)
        generated = ""
        if data["create_user"]:
            created = member_create(
                project=project,
                actor=actor,
                username=data["username"],
                role=data["role"],
                password=data["password"],
            )
            membership, generated = created.membership, created.generated_password
        else:
            if data["password"]:
                raise serializers.ValidationError(
                    {"password": ["Only a new user is given a password (set create_user)."]}
                )
            membership = member_add(
                project=project, actor=actor, username=data["username"], role=data["role"]
            )
        # NewMemberOutput documents this shape: the member plus the password generated, if any.
        body = {**MemberOutput(membership).data, "generated_password": generated}
        return Response(body, status=status.HTTP_201_CREATED)


class MemberDetailApi(APIView):
    class RoleInput(InputSerializer):
        role = serializers.ChoiceField(choices=Role.choices)

    @extend_schema(
        operation_id="members_change_role",
        summary="Change a member's role; the last admin cannot be demoted (audited)",
        request=RoleInput,
        responses=MemberOutput,
    )
    def patch(self, request: Request, project_id: int, user_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_MEMBERS
        )
        membership = project_member(project, user_id)
        payload = self.RoleInput(data=request.data)
        payload.is_valid(raise_exception=True)
        membership = member_role_change(
            membership=membership, actor=acting_user(request), role=payload.validated_data["role"]
        )
        return Response(MemberOutput(membership).data)

    @extend_schema(
        operation_id="members_remove",
        summary="Remove a member; the last admin cannot be removed (audited)",
        request=None,
        responses={204: None},
    )
    def delete(self, request: Request, project_id: int, user_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_MEMBERS
        )
        membership = project_member(project, user_id)
        refuse_any_input(request)
        member_remove(membership=membership, actor=acting_user(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditLogApi(APIView):
    @extend_schema(
        operation_id="members_audit_log",
        summary="Every change to the members, newest first: who, what, when, before and after",
        parameters=PAGINATION_PARAMETERS,
        responses=page_serializer("AuditEntryPage", AuditEntryOutput),
    )
    def get(self, request: Request, project_id: int) -> Response:
        project, _ = project_for(
            user=request.user, project_id=project_id, action=Action.MANAGE_MEMBERS
        )
        return paginated_response(
            request=request,
            view=self,
            queryset=audit_entries(project),
            serializer_class=AuditEntryOutput,
        )
