import pytest
from django.core.management import call_command

from datasets.models import Example, ExampleStatus, ReviewDecision
from ftportal.models import Membership, Project
from ftportal.roles import Role

pytestmark = pytest.mark.django_db


def test_the_demo_has_a_user_per_role_approved_examples_and_flawed_ones_to_review():
    call_command("load_demo")
    project = Project.objects.get()
    roles = dict(Membership.objects.filter(project=project).values_list("user__username", "role"))
    assert roles == {
        "admin": Role.ADMIN,
        "lead": Role.ML_LEAD,
        "reviewer": Role.REVIEWER,
        "manager": Role.MANAGER,
    }
    statuses = [e.status for e in Example.objects.all()]
    assert statuses.count(ExampleStatus.APPROVED) == 136
    assert statuses.count(ExampleStatus.PENDING) == 14
    # The approvals are recorded like any reviewer's, so lineage can name who approved what.
    assert ReviewDecision.objects.filter(reviewer__username="reviewer").count() == 136


def test_loading_the_demo_twice_adds_nothing():
    call_command("load_demo")
    call_command("load_demo")
    assert Project.objects.count() == 1
    assert Example.objects.count() == 150


def test_the_demo_declares_its_json_contract_and_the_flawed_answers_break_it():
    from django.test import Client
    from django.urls import reverse

    from datasets.contracts import contract_violation
    from datasets.models import Dataset, ImportBatch

    call_command("load_demo")
    dataset = Dataset.objects.get()
    assert dataset.answer_contract["kind"] == "json_schema"
    properties = dataset.answer_contract["schema"]["properties"]
    assert properties["category"]["enum"] == ["billing", "bug", "account", "feature_request"]
    assert properties["priority"]["enum"] == ["low", "medium", "high"]
    # Every approved answer keeps it, so the lead can freeze without an override ...
    approved = Example.objects.filter(status=ExampleStatus.APPROVED)
    assert all(
        contract_violation(dataset.answer_contract, e.messages[-1]["content"]) is None
        for e in approved
    )
    # ... and the flawed file's import says which of its lines break it: not JSON, prose around
    # the JSON, the misspelled key, Spanish, "urgent" and the empty object.
    flawed = ImportBatch.objects.get(filename="support_triage_flawed.jsonl")
    assert flawed.contract_violations["count"] == 6
    first = Example.objects.get(
        import_batch=flawed, source_line=flawed.contract_violations["lines"][0]["line"]
    )
    lead = Membership.objects.get(project__isnull=False, role=Role.ML_LEAD).user
    client = Client()
    client.force_login(lead)
    page = client.get(
        reverse("review_queue", args=[dataset.project_id, dataset.pk]) + f"?example={first.pk}"
    )
    assert 'data-kind="contract_violation"' in page.content.decode()
