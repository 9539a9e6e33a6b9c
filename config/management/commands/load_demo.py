"""Load the demo project: support-ticket triage, most examples approved, flawed ones pending."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.db import transaction

from datasets.imports.services import examples_import_file
from datasets.models import Dataset, Example, ExampleStatus, ImportBatch, ReviewAction
from datasets.services import dataset_contract_set, example_review
from ftportal.models import Membership, Project
from ftportal.roles import Role

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"
PROJECT_NAME = "Support ticket triage (demo)"
DATASET_NAME = "support-tickets"
# Demo logins; the password is printed by `make run` and only meant for a local demo.
DEMO_PASSWORD = "demo-pass-123"
DEMO_USERS: dict[str, Role] = {
    "admin": Role.ADMIN,
    "lead": Role.ML_LEAD,
    "reviewer": Role.REVIEWER,
    "manager": Role.MANAGER,
}


class Command(BaseCommand):
    help = "Create the demo project, its users and its dataset (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            project, created = Project.objects.get_or_create(
                name=PROJECT_NAME,
                defaults={
                    "description": "Triage Northwind Cloud support tickets into a fixed JSON "
                    "format: category and priority."
                },
            )
            users = {name: self._user(name, project, role) for name, role in DEMO_USERS.items()}
            dataset, _ = Dataset.objects.get_or_create(project=project, name=DATASET_NAME)
            if not dataset.answer_contract:
                # Declared before the import, so the import report already flags the pending
                # answers that break it, and the review card shows why.
                contract = json.loads((DEMO_DIR / "answer_contract.json").read_text("utf-8"))
                dataset_contract_set(dataset=dataset, contract=contract)
            if not dataset.examples.exists():
                self._load_examples(dataset, users["reviewer"])
        state = "created" if created else "already present"
        self.stdout.write(f"Demo project {state}: {project.name} (id {project.pk})")

    def _user(self, username: str, project: Project, role: Role) -> User:
        user, created = User.objects.get_or_create(username=username)
        if created:
            user.set_password(DEMO_PASSWORD)
            user.is_staff = user.is_superuser = role == Role.ADMIN
            user.save()
        Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
        return user

    def _load_examples(self, dataset: Dataset, reviewer: User) -> None:
        clean = self._import(dataset, "support_triage.jsonl", reviewer)
        # The clean file stands for work a reviewer already did; the flawed file is left
        # pending so that the demo's reviewer has real mistakes to catch.
        for example in Example.objects.filter(import_batch=clean, status=ExampleStatus.PENDING):
            example_review(
                example=example,
                user=reviewer,
                action=ReviewAction.APPROVE,
                comment="approved while loading the demo",
            )
        self._import(dataset, "support_triage_flawed.jsonl", reviewer)

    def _import(self, dataset: Dataset, filename: str, user: User) -> ImportBatch:
        path = DEMO_DIR / filename
        with path.open("rb") as stream:
            return examples_import_file(
                dataset=dataset,
                stream=stream,
                filename=filename,
                size=path.stat().st_size,
                user=user,
            )
