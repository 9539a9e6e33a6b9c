"""The one place a model name the gateway is sent becomes a model version, at request time.

Names (what ``GET /v1/models`` lists and ``model`` in a chat request names):

- ``<project>/<model>/<alias>``: what the alias of a registered model points at now, e.g.
  ``Ticket triage/triage/production``;
- ``<project>/<alias>``: the same, short, while exactly one model of the project has that alias
  (the usual case: one model per project), e.g. ``Ticket triage/production``;
- ``<project>/<model>@<number>``: one version, pinned, e.g. ``Ticket triage/triage@3``.

Each part is the project's, model's or alias's own name, as it is, spaces and capitals
included, except for the three characters the syntax uses, written percent-encoded: ``%`` as
``%25``, ``/`` as ``%2F`` and ``@`` as ``%40`` (a project named ``R&D / EU`` is
``R&D %2F EU``). Any other percent-encoding is accepted too and decoded, so a name encoded whole
(``Ticket%20triage/production``) resolves as well.

:func:`model_name_resolution` reads the rows every time. The gateway asks
``serving.plans.serving_plan``, which keeps a name's resolution (with its alias's running
experiment and fallback route) a moment, FTPORTAL_GATEWAY_NAME_TTL_SECONDS: the queries were a
large share of a gateway request's CPU time (bench/gateway.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from ftportal.models import Project
from registry.models import Alias, ModelVersion, RegisteredModel

PINNED_MARK = "@"
SEPARATOR = "/"


class UnknownModelName(Exception):
    """The name serves nothing for this project; the message says why (safe to answer)."""


class OtherProjectModelName(Exception):
    """The name is another project's: the key may not call it."""


def name_part(text: str) -> str:
    """One part of a model name: ``text`` with the syntax's own characters encoded."""
    return text.replace("%", "%25").replace(SEPARATOR, "%2F").replace(PINNED_MARK, "%40")


def alias_model_name(project: Project, model: RegisteredModel, alias: str) -> str:
    return SEPARATOR.join((name_part(project.name), name_part(model.name), name_part(alias)))


def short_alias_model_name(project: Project, alias: str) -> str:
    return SEPARATOR.join((name_part(project.name), name_part(alias)))


def pinned_model_name(version: ModelVersion) -> str:
    """The name that always serves ``version``; also what an answer names as its ``model``."""
    model = version.registered_model
    return (
        f"{name_part(model.project.name)}{SEPARATOR}{name_part(model.name)}"
        f"{PINNED_MARK}{version.number}"
    )


@dataclass(frozen=True)
class ServedModelName:
    name: str
    version: ModelVersion


def served_model_names(project: Project) -> list[ServedModelName]:
    """Every name the project's keys may call, with the version it serves now: each alias
    (short where unambiguous, and long), then each version pinned, newest first per model."""
    aliases = list(
        Alias.objects.filter(registered_model__project=project)
        .select_related("registered_model", "model_version__registered_model__project")
        .order_by("registered_model__name", "name")
    )
    models_per_alias: dict[str, int] = {}
    for alias in aliases:
        models_per_alias[alias.name] = models_per_alias.get(alias.name, 0) + 1
    names = [
        ServedModelName(short_alias_model_name(project, alias.name), alias.model_version)
        for alias in aliases
        if models_per_alias[alias.name] == 1
    ]
    names += [
        ServedModelName(
            alias_model_name(project, alias.registered_model, alias.name), alias.model_version
        )
        for alias in aliases
    ]
    versions = ModelVersion.objects.filter(registered_model__project=project).select_related(
        "registered_model__project"
    )
    names += [
        ServedModelName(pinned_model_name(version), version)
        for version in versions.order_by("registered_model__name", "-number")
    ]
    return names


def _parts(name: str) -> list[str]:
    parts = [unquote(part) for part in name.split(SEPARATOR)]
    if len(parts) not in (2, 3) or not all(part.strip() for part in parts):
        raise UnknownModelName(
            f"The model '{name}' does not exist: a model name reads '<project>/<alias>', "
            "'<project>/<model>/<alias>' or '<project>/<model>@<version>' (GET /v1/models "
            "lists them)."
        )
    return parts


@dataclass(frozen=True)
class Resolution:
    """What a name serves now: the version, and the alias it went through (None for a pinned
    name, which an experiment never splits)."""

    version: ModelVersion
    alias: Alias | None


def model_name_resolve(*, project: Project, name: str) -> ModelVersion:
    """The version ``name`` serves now for a key of ``project`` (see
    :func:`model_name_resolution`)."""
    return model_name_resolution(project=project, name=name).version


def model_name_resolution(*, project: Project, name: str) -> Resolution:
    """The version ``name`` serves now for a key of ``project``, with the alias it names.

    OtherProjectModelName when the name starts with another existing project's name;
    UnknownModelName (its message naming what is missing) for anything else that serves
    nothing.
    """
    raw_parts = name.split(SEPARATOR)
    parts = _parts(name)
    if parts[0] != project.name:
        if Project.objects.filter(name=parts[0]).exists():
            raise OtherProjectModelName(
                f"The model '{name}' belongs to another project; this key may not call it."
            )
        raise UnknownModelName(f"The model '{name}' does not exist: no project '{parts[0]}'.")
    versions = ModelVersion.objects.select_related(
        "registered_model__project", "base_model__endpoint"
    )
    if len(parts) == 2 and PINNED_MARK in raw_parts[1]:
        model_part, _, number = raw_parts[1].rpartition(PINNED_MARK)
        model_name = unquote(model_part)
        if not number.isdigit():
            raise UnknownModelName(
                f"The model '{name}' does not exist: a pinned version reads "
                "'<project>/<model>@<version number>'."
            )
        version = versions.filter(
            registered_model__project=project,
            registered_model__name=model_name,
            number=int(number),
        ).first()
        if version is None:
            raise UnknownModelName(
                f"The model '{name}' does not exist: '{model_name}' has no version {number}."
            )
        return Resolution(version, None)
    if len(parts) == 2:
        aliases = list(
            Alias.objects.filter(registered_model__project=project, name=parts[1]).select_related(
                "registered_model"
            )[:2]
        )
        if not aliases:
            raise UnknownModelName(
                f"The model '{name}' does not exist: no model of the project has the alias "
                f"'{parts[1]}' (yet)."
            )
        if len(aliases) > 1:
            raise UnknownModelName(
                f"The model '{name}' is ambiguous: several models of the project have the alias "
                f"'{parts[1]}'; name one, as '<project>/<model>/{name_part(parts[1])}'."
            )
        return Resolution(versions.get(pk=aliases[0].model_version_id), aliases[0])
    alias = Alias.objects.filter(
        registered_model__project=project, registered_model__name=parts[1], name=parts[2]
    ).first()
    if alias is None:
        raise UnknownModelName(
            f"The model '{name}' does not exist: the project has no model '{parts[1]}' with "
            f"the alias '{parts[2]}'."
        )
    return Resolution(versions.get(pk=alias.model_version_id), alias)
