"""Creating an experiment on the experiments page: leads and admins get the form and create a
draft through the service the API uses (the same refusals, word for word); each refusal shows
beside the input it is about and the form comes back as typed; reviewers and managers see no
form and get 403 on POST, an outsider 404; nothing typed reaches the page unescaped."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape
from typing import Any, Protocol

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from ftportal.models import Project
from ftportal.roles import Role
from serving.models import Experiment, ExperimentStatus
from tests.api.builders import token_client
from tests.pages.builders import XSS, XSS_ESCAPED, page_text

from .experiment_builders import SUCCESS, TwoVersions, other_base, two_versions

pytestmark = pytest.mark.django_db

MANAGERS = [Role.ML_LEAD, Role.ADMIN]
READERS_ONLY = [Role.REVIEWER, Role.MANAGER]


@pytest.fixture
def versions(project: Project, lead: User) -> TwoVersions:
    return two_versions(project, lead)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page(project: Project) -> str:
    return reverse("experiments", args=[project.pk])


def form_body(versions: TwoVersions, **changes: str) -> dict[str, str]:
    """The form as a lead fills it: control (v1, weight 9) against challenger (v2)."""
    return {
        "name": "summer test",
        "registered_model_id": str(versions.first.registered_model_id),
        "alias": "production",
        "success_event": SUCCESS,
        "arm-0-name": "control",
        "arm-0-target": f"version:{versions.first.pk}",
        "arm-0-weight": "9",
        "arm-1-name": "challenger",
        "arm-1-target": f"version:{versions.second.pk}",
        "arm-1-weight": "1",
        **changes,
    }


def api_body(versions: TwoVersions, **changes: Any) -> dict[str, Any]:
    """The same experiment as the API takes it."""
    return {
        "name": "summer test",
        "registered_model_id": versions.first.registered_model_id,
        "alias": "production",
        "success_event": SUCCESS,
        "arms": [
            {"name": "control", "model_version_id": versions.first.pk, "weight": 9},
            {"name": "challenger", "model_version_id": versions.second.pk, "weight": 1},
        ],
        **changes,
    }


class Answered(Protocol):
    content: bytes


def error_beside(response: Answered, error_id: str) -> str:
    """The error shown under ``error_id`` (beside its input); "" when there is none."""
    found = re.search(
        rf'<p class="error field-error" id="{error_id}">(.*?)</p>', response.content.decode()
    )
    return unescape(found.group(1)) if found else ""


def input_value(response: Answered, name: str) -> str:
    found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', response.content.decode())
    assert found, f"no input {name}"
    return unescape(found.group(1))


def chosen(response: Answered, name: str) -> list[str]:
    """The selected option values of select ``name``."""
    html = response.content.decode()
    start = html.index(f'<select name="{name}"')
    select = html[start : html.index("</select>", start)]
    return re.findall(r'<option value="([^"]*)" selected>', select)


# --- who sees the form and who may post it ---------------------------------------------------


@pytest.mark.parametrize("role", MANAGERS)
def test_a_lead_or_admin_creates_a_draft_with_two_arms_and_a_shadow_from_the_page(
    project: Project, make_member: Callable[..., User], versions: TwoVersions, role: Role
) -> None:
    client = logged_in(make_member(role))
    assert 'id="create-experiment"' in client.get(page(project)).content.decode()
    baseline = other_base()

    created = client.post(
        page(project),
        form_body(
            versions,
            **{"shadow-name": "baseline", "shadow-target": f"base:{baseline.key}"},
            shadow_share="0.25",
        ),
    )

    experiment = Experiment.objects.get(project=project)
    assert created.status_code == 302
    assert created["Location"] == reverse("experiment_page", args=[project.pk, experiment.pk])
    assert experiment.name == "summer test" and experiment.alias == "production"
    assert experiment.status == ExperimentStatus.DRAFT
    assert experiment.success_event == SUCCESS and experiment.shadow_share == 0.25
    arms = [
        (arm.name, arm.weight, arm.model_version_id, arm.base_model_id, arm.is_shadow)
        for arm in experiment.arms.order_by("position")
    ]
    assert arms == [
        ("control", 9, versions.first.pk, None, False),
        ("challenger", 1, versions.second.pk, None, False),
        ("baseline", 0, None, baseline.pk, True),
    ]
    shown = client.get(created["Location"])
    assert "Created summer test, a draft: nothing changes until you start it." in page_text(shown)


@pytest.mark.parametrize("role", READERS_ONLY)
def test_reviewers_and_managers_see_no_form_and_are_refused_with_403(
    project: Project, make_member: Callable[..., User], versions: TwoVersions, role: Role
) -> None:
    client = logged_in(make_member(role))

    listing = client.get(page(project))
    refused = client.post(page(project), form_body(versions))

    assert listing.status_code == 200
    assert 'id="create-experiment"' not in listing.content.decode()
    assert refused.status_code == 403
    assert "does not allow you to create, start, stop or conclude experiments" in page_text(refused)
    assert not Experiment.objects.exists()


def test_an_outsider_posting_the_form_gets_404(project: Project, versions: TwoVersions) -> None:
    stranger = User.objects.create_user(username="stranger", password="pw")
    assert logged_in(stranger).post(page(project), form_body(versions)).status_code == 404
    assert not Experiment.objects.exists()


def test_a_created_experiment_starts_from_its_page_and_is_listed_as_running(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    client = logged_in(lead)
    created = client.post(page(project), form_body(versions))
    experiment = Experiment.objects.get(project=project)

    client.post(reverse("experiment_act", args=[project.pk, experiment.pk, "start"]))

    assert created.status_code == 302
    listing = client.get(page(project)).content.decode()
    row = re.search(rf'<tr id="experiment-{experiment.pk}">(.*?)</tr>', listing, re.S)
    assert row and '<td class="experiment-status">running</td>' in row.group(1)


# --- refusals: the service's words, beside the input, the form as typed ----------------------

FIRST = -1  # in an API arm below: version 1's id


def with_first_version(changes: dict[str, Any], versions: TwoVersions) -> dict[str, Any]:
    arms = [
        {**arm, "model_version_id": versions.first.pk}
        if arm.get("model_version_id") == FIRST
        else arm
        for arm in changes.get("arms", [])
    ]
    return {**changes, "arms": arms} if arms else changes


@pytest.mark.parametrize(
    ("form_changes", "api_changes", "error_id", "status"),
    [
        (
            {"arm-1-name": "control"},
            {"arms": [{"name": "control", "model_version_id": FIRST}] * 2},
            "arm-1-name-error",
            400,
        ),
        (
            {"arm-1-name": "", "arm-1-target": ""},
            {
                "arms": [
                    {"name": "control", "model_version_id": FIRST},
                    {"name": "s", "shadow": True},
                ]
            },
            "arms-error",
            400,
        ),
        (
            {"arm-1-target": "base:no-such-model"},
            {
                "arms": [
                    {"name": "a", "model_version_id": FIRST},
                    {"name": "b", "base_model_key": "no-such-model"},
                ]
            },
            "arm-1-target-error",
            400,
        ),
        (
            {"arm-0-target": ""},
            {"arms": [{"name": "a"}, {"name": "b", "model_version_id": FIRST}]},
            "arm-0-target-error",
            400,
        ),
        ({"arm-1-weight": "0"}, None, "arm-1-weight-error", 400),
        ({"shadow_share": "0.5"}, {"shadow_share": 0.5}, "shadow-share-error", 400),
        ({"name": "  "}, None, "name-error", 400),
        ({"success_event": ""}, None, "success-event-error", 400),
        ({"registered_model_id": "999999"}, None, "registered-model-error", 400),
    ],
)
def test_a_refusal_shows_beside_its_input_in_the_words_the_api_uses(
    project: Project,
    lead: User,
    versions: TwoVersions,
    form_changes: dict[str, str],
    api_changes: dict[str, Any] | None,
    error_id: str,
    status: int,
) -> None:
    refused = logged_in(lead).post(page(project), form_body(versions, **form_changes))

    assert refused.status_code == status
    message = error_beside(refused, error_id)
    assert message
    assert "Not created: see the errors beside the fields." in page_text(refused)
    assert not Experiment.objects.exists()
    if api_changes is not None:
        # The API, sent the same mistake, refuses it with the same sentence.
        answer = token_client(lead).post(
            f"/api/projects/{project.pk}/experiments/",
            api_body(versions, **with_first_version(api_changes, versions)),
            format="json",
        )
        assert answer.status_code == status, answer.content
        assert answer.json()["error"]["message"] == message


def test_a_name_already_taken_is_a_409_beside_the_name(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    client = logged_in(lead)
    assert client.post(page(project), form_body(versions)).status_code == 302

    again = client.post(page(project), form_body(versions))

    assert again.status_code == 409
    assert error_beside(again, "name-error") == (
        "name: the project already has an experiment named 'summer test'."
    )
    assert Experiment.objects.count() == 1


def test_nothing_typed_is_lost_when_the_form_is_refused(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    baseline = other_base()
    typed = form_body(
        versions,
        **{
            "arm-1-name": "control",  # the refusal: two arms named control
            "arm-2-name": "third",
            "arm-2-target": f"base:{baseline.key}",
            "arm-2-weight": "4",
            "shadow-name": "mirror",
            "shadow-target": f"version:{versions.second.pk}",
        },
        alias="canary",
        shadow_share="0.3",
    )

    refused = logged_in(lead).post(page(project), typed)

    assert refused.status_code == 400
    for name in ("name", "alias", "success_event", "shadow_share", "shadow-name"):
        assert input_value(refused, name) == typed[name]
    for row in range(3):
        assert input_value(refused, f"arm-{row}-name") == typed[f"arm-{row}-name"]
        assert input_value(refused, f"arm-{row}-weight") == typed[f"arm-{row}-weight"]
        assert chosen(refused, f"arm-{row}-target") == [typed[f"arm-{row}-target"]]
    assert chosen(refused, "shadow-target") == [typed["shadow-target"]]
    assert chosen(refused, "registered_model_id") == [typed["registered_model_id"]]
    assert chosen(refused, "arm-3-target") == []


def test_inputs_that_cannot_be_read_are_all_marked_at_once(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    refused = logged_in(lead).post(
        page(project),
        form_body(versions, **{"arm-0-weight": "2.5", "arm-1-weight": "lots"}, shadow_share="x"),
    )

    assert refused.status_code == 400
    assert error_beside(refused, "arm-0-weight-error") == (
        "arms[0].weight: a whole number from 1 to 1000000."
    )
    assert error_beside(refused, "arm-1-weight-error") == (
        "arms[1].weight: a whole number from 1 to 1000000."
    )
    assert error_beside(refused, "shadow-share-error") == "shadow_share: a share from 0 to 1."
    assert not Experiment.objects.exists()


def test_a_blank_row_between_arms_is_no_arm_and_errors_land_on_the_row_typed(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    client = logged_in(lead)
    gap = form_body(versions, **{"arm-1-name": "", "arm-1-target": "", "arm-1-weight": "1"})
    gap |= {"arm-2-name": "control", "arm-2-target": f"version:{versions.second.pk}"}

    refused = client.post(page(project), gap)
    assert refused.status_code == 400
    # The service calls it arms[1] (the second arm sent); the page puts it on the third row.
    assert (
        error_beside(refused, "arm-2-name-error") == "arms[1].name: two arms are named 'control'."
    )
    assert error_beside(refused, "arm-1-name-error") == ""

    created = client.post(page(project), gap | {"arm-2-name": "challenger"})
    assert created.status_code == 302
    experiment = Experiment.objects.get(project=project)
    assert list(experiment.arms.order_by("position").values_list("name", flat=True)) == [
        "control",
        "challenger",
    ]


def test_what_was_typed_is_shown_again_escaped(
    project: Project, lead: User, versions: TwoVersions
) -> None:
    refused = logged_in(lead).post(
        page(project), form_body(versions, name=XSS, **{"arm-1-name": XSS, "arm-0-name": XSS})
    )

    assert refused.status_code == 400
    html = refused.content.decode()
    assert XSS not in html and XSS_ESCAPED in html
