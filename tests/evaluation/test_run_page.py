"""The evaluation run page through Django's test client: prompts, references and outputs are
escaped, and the page polls while the run is queued and stops once it has finished."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from datasets.models import Dataset, DatasetVersion
from evaluation.models import Candidate, EvalResult, EvalRun, EvalStatus
from tests.pages.builders import HTMX, XSS, XSS_ESCAPED, World, assert_escaped
from tests.pages.fixtures import hostile_version_fixture, page_world_fixture  # noqa: F401


def test_prompts_references_and_outputs_are_escaped_on_the_evaluation_page(
    client: Client, dataset: Dataset, lead: User, hostile_version: DatasetVersion, base_model
) -> None:
    run = EvalRun.objects.create(
        project=dataset.project,
        dataset_version=hostile_version,
        status=EvalStatus.SUCCEEDED,
        created_by=lead,
    )
    candidate = Candidate.objects.create(
        run=run, position=0, label="base", kind="base", base_model=base_model
    )
    item = hostile_version.items.get(position=0)  # the hostile example came first
    EvalResult.objects.create(
        candidate=candidate, item=item, output=f"{XSS}!", scores={"exact_match": 0.0}
    )
    client.force_login(lead)

    response = client.get(reverse("eval_detail", args=[dataset.project_id, run.pk]))

    assert_escaped(response)
    html = response.content.decode()
    assert html.count(XSS_ESCAPED) == 3  # prompt, reference and the candidate's output


def test_an_evaluation_polls_while_queued_and_stops_when_finished(
    client: Client, world: World, lead: User
) -> None:
    run = EvalRun.objects.create(
        project=world.project, dataset_version=world.version, created_by=lead
    )
    client.force_login(lead)
    url = reverse("eval_detail", args=[world.project.pk, run.pk])

    queued = client.get(url, headers=HTMX).content.decode()
    run.status = EvalStatus.FAILED
    run.error = "RuntimeError: out of memory"
    run.save()
    failed = client.get(url, headers=HTMX).content.decode()

    assert "<html" not in queued
    assert 'hx-trigger="every 2s"' in queued
    assert "hx-trigger" not in failed
    assert "RuntimeError: out of memory" in failed
