"""The retraining proposals' pages (/projects/<id>/retraining/) and API
(/api/projects/<id>/retraining/): every member reads them, with user content escaped; only ML
leads and admins accept (which launches the job) or dismiss; a refusal names its field and
stores nothing; an outsider learns nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel
from datasets.models import Dataset
from ftportal.models import Project
from ftportal.roles import Role
from monitoring.models import ProposalState, RetrainProposal
from registry.models import ModelVersion
from tests.factories import registered_version
from tests.monitoring.test_retraining import (
    check,
    in_production,
    new_examples,
    no_refusal_left_in_redis,  # noqa: F401
)
from tests.pages.builders import XSS
from training.models import TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def proposal(project: Project, lead: User, base_model: BaseModel) -> RetrainProposal:
    """An open proposal whose reason names a dataset called with markup."""
    served: ModelVersion = in_production(
        registered_version(project, lead, base_model, adapter_dir="/nowhere/served"), lead
    )
    Dataset.objects.filter(pk=served.dataset_version.dataset_id).update(name=f"tickets {XSS}")
    new_examples(served, 200)
    found = check(served)
    assert found is not None
    return found


def logged_in(user: User) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def page(proposal: RetrainProposal, tail: str = "") -> str:
    return f"/projects/{proposal.project_id}/retraining/{proposal.pk}/{tail}"


def api(proposal: RetrainProposal, tail: str = "") -> str:
    return f"/api/projects/{proposal.project_id}/retraining/{proposal.pk}/{tail}"


def test_every_member_reads_the_list_and_the_proposal_with_its_markup_escaped(
    proposal: RetrainProposal, make_member: Callable[..., User]
) -> None:
    reviewer = logged_in(make_member(Role.REVIEWER))
    listed = reviewer.get(reverse("retrain_list", args=[proposal.project_id]))
    assert listed.status_code == 200
    text = listed.content.decode()
    assert f'id="proposal-{proposal.pk}"' in text
    assert XSS not in text and "&lt;script&gt;" in text

    shown = reviewer.get(page(proposal))
    assert shown.status_code == 200
    text = shown.content.decode()
    assert XSS not in text and "&lt;script&gt;" in text
    assert 'id="proposal-reasons"' in text and "200 approved examples" in text
    assert proposal.base_model.display_name in text
    assert "frozen into a new version on" in text
    assert 'id="proposal-gate"' in text and "exact match" in text
    # A reviewer decides nothing and sees no bills; the time estimate is for everyone.
    assert 'id="proposal-accept"' not in text and 'id="proposal-dismiss"' not in text
    assert 'id="estimate-cost"' not in text and 'id="proposal-estimate"' in text


def test_a_lead_sees_the_controls_and_the_estimates_cost(
    proposal: RetrainProposal, lead: User
) -> None:
    text = logged_in(lead).get(page(proposal)).content.decode()
    assert 'id="proposal-accept"' in text and 'id="proposal-dismiss"' in text
    assert 'id="estimate-cost"' in text


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.MANAGER])
def test_reviewers_and_managers_cannot_accept_or_dismiss(
    proposal: RetrainProposal, make_member: Callable[..., User], role: Role
) -> None:
    user = logged_in(make_member(role))
    jobs = TrainingJob.objects.count()
    assert user.post(page(proposal, "accept/")).status_code == 403
    assert user.post(page(proposal, "dismiss/"), {"note": "no"}).status_code == 403
    assert user.post(api(proposal, "accept/")).status_code == 403
    dismissed = user.post(api(proposal, "dismiss/"), {}, content_type="application/json")
    assert dismissed.status_code == 403
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.OPEN and TrainingJob.objects.count() == jobs


def test_an_outsider_learns_nothing(proposal: RetrainProposal) -> None:
    outsider = logged_in(User.objects.create_user(username="outsider", password="pw"))
    assert outsider.get(page(proposal)).status_code == 404
    assert outsider.get(api(proposal)).status_code == 404
    assert outsider.post(api(proposal, "accept/")).status_code == 404


def test_another_projects_proposal_is_not_found(
    proposal: RetrainProposal, make_member: Callable[..., User]
) -> None:
    elsewhere = Project.objects.create(name="Elsewhere")
    lead = logged_in(make_member(Role.ML_LEAD, target=elsewhere))
    assert lead.get(f"/projects/{elsewhere.pk}/retraining/{proposal.pk}/").status_code == 404
    answer = lead.post(f"/api/projects/{elsewhere.pk}/retraining/{proposal.pk}/accept/")
    assert answer.status_code == 404
    assert answer.json() == {"error": {"message": "Not found."}}


def test_a_lead_accepts_on_the_page_and_the_page_links_the_job(
    proposal: RetrainProposal, lead: User
) -> None:
    browser = logged_in(lead)
    answer = browser.post(page(proposal, "accept/"))
    assert answer.status_code == 302
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.ACCEPTED and proposal.training_job is not None
    text = browser.get(page(proposal)).content.decode()
    job_url = reverse("job_detail", args=[proposal.project_id, proposal.training_job_id])
    assert f'href="{job_url}"' in text
    assert "queued once the job's version is registered" in text
    assert 'id="proposal-accept"' not in text

    again = browser.post(page(proposal, "accept/"))
    assert again.status_code == 409 and "accepted already" in again.content.decode()
    assert TrainingJob.objects.filter(dataset_version=proposal.dataset_version).count() == 1


def test_the_api_lists_reads_and_accepts_and_a_second_accept_is_409(
    proposal: RetrainProposal, lead: User, make_member: Callable[..., User]
) -> None:
    listed = logged_in(make_member(Role.MANAGER)).get(
        f"/api/projects/{proposal.project_id}/retraining/?state=open"
    )
    assert listed.status_code == 200
    assert [row["id"] for row in listed.json()["results"]] == [proposal.pk]
    bad_state = logged_in(lead).get(f"/api/projects/{proposal.project_id}/retraining/?state=x")
    assert bad_state.status_code == 400 and "state" in bad_state.json()["error"]["fields"]

    read = logged_in(make_member(Role.REVIEWER)).get(api(proposal)).json()
    assert (read["state"], read["dataset_version"], read["base_model"]) == (
        "open",
        None,
        proposal.base_model.key,
    )
    assert read["reasons"][0]["kind"] == "new_examples" and read["estimate"] is None
    assert logged_in(lead).get(api(proposal)).json()["estimate"]["train_examples"] > 0

    client = logged_in(lead)
    refused = client.post(api(proposal, "accept/"), {"now": 1}, content_type="application/json")
    assert refused.status_code == 400 and "now" in refused.json()["error"]["fields"]
    assert TrainingJob.objects.filter(created_by=lead, model_name="triage").count() == 1

    accepted = client.post(api(proposal, "accept/"))
    assert accepted.status_code == 200
    body = accepted.json()
    assert body["state"] == "accepted" and body["training_job"] is not None
    assert body["decided_by"] == lead.username and body["dataset_version"] is not None

    again = client.post(api(proposal, "accept/"))
    assert again.status_code == 409
    assert again.json() == {"error": {"message": "This proposal is accepted already."}}


def test_the_api_dismisses_and_a_bad_note_names_the_field_and_stores_nothing(
    proposal: RetrainProposal, lead: User
) -> None:
    client = logged_in(lead)
    for wrong, field in (
        ({"note": "x" * 2001}, "note"),
        ({"note": 5, "reason": "typo"}, "reason"),
    ):
        refused = client.post(api(proposal, "dismiss/"), wrong, content_type="application/json")
        assert refused.status_code == 400
        assert field in refused.json()["error"]["fields"]
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.OPEN and proposal.decided_by is None

    dismissed = client.post(
        api(proposal, "dismiss/"), {"note": "after the holidays"}, content_type="application/json"
    )
    assert dismissed.status_code == 200
    assert (dismissed.json()["state"], dismissed.json()["decision_note"]) == (
        "dismissed",
        "after the holidays",
    )
    assert client.post(api(proposal, "dismiss/")).status_code == 409
