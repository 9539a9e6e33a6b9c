"""Create an application key from the command line (the page /projects/<id>/app-keys/ and the
API do the same): for scripts and the README's first call to the demo's production model. The
key is printed once, as on the page; only its hash is stored."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ftportal.errors import ApplicationError
from ftportal.models import Membership, Project
from ftportal.roles import Action, role_allows
from serving.services import application_key_create


class Command(BaseCommand):
    help = "Create an application key of a project as a member allowed to manage keys."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="the project's name")
        parser.add_argument("--user", required=True, help="a lead or admin of the project")
        parser.add_argument("--name", required=True, help="what the key is for")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"--project: no project is named {options['project']!r}.")
        user = User.objects.filter(username=options["user"]).first()
        role = (
            Membership.objects.filter(project=project, user=user)
            .values_list("role", flat=True)
            .first()
        )
        if user is None or not role_allows(role, Action.MANAGE_APP_KEYS):
            raise CommandError(
                f"--user: {options['user']!r} may not manage the keys of {project.name}."
            )
        try:
            created = application_key_create(project=project, user=user, name=options["name"])
        except ApplicationError as error:
            raise CommandError(str(error)) from error
        # The plaintext alone on stdout, so that scripts can capture it.
        self.stdout.write(created.plaintext)
