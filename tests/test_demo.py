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
