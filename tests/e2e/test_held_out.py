"""Validation stays held out, in a real browser: an ML lead sends the model's wrong answers on
validation items to review, approves them, and the next freeze keeps every copy in validation
beside its origin; moving one copy to training warns how much the evaluation set shrinks and the
freeze after that retires its origin."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from datasets.models import DatasetVersion, Example, ExampleStatus, Split
from evaluation.models import Candidate, EvalResult, EvalRun, EvalStatus
from ftportal.roles import Role
from tests.factories import frozen_version

from .conftest import login

pytestmark = pytest.mark.e2e

WRONG = json.dumps({"category": "bug", "priority": "high"})


def sides(version: DatasetVersion) -> dict[int | None, str]:
    return dict(version.items.values_list("example_id", "split"))


def freeze(page: Page, live_server, project_id: int, dataset_id: int) -> None:
    page.goto(f"{live_server.url}/projects/{project_id}/datasets/{dataset_id}/")
    page.get_by_label("Validation fraction").fill("0.2")
    page.get_by_role("button", name="Freeze version").click()


def test_failures_sent_to_review_and_approved_stay_in_validation_after_the_next_freeze(
    live_server, page: Page, project, make_member, base_model
) -> None:
    lead = make_member(Role.ML_LEAD)
    v1 = frozen_version(project, lead, count=20)
    dataset = v1.dataset
    validation = list(v1.items.filter(split=Split.VALIDATION).order_by("position"))
    assert len(validation) == 4
    run = EvalRun.objects.create(
        project=project, dataset_version=v1, status=EvalStatus.SUCCEEDED, created_by=lead
    )
    candidate = Candidate.objects.create(
        run=run, position=0, label="base", kind="base", base_model=base_model
    )
    for item in validation:
        EvalResult.objects.create(
            candidate=candidate, item=item, output=WRONG, scores={"exact_match": 0.0}
        )

    # --- send every wrong answer to the review queue ------------------------------------------
    login(page, live_server, lead.username)
    page.goto(f"{live_server.url}/projects/{project.pk}/evaluations/{run.pk}/failures/")
    page.locator("#select-all").check()
    page.locator("#send-to-review").click()
    expect(page.locator(".messages")).to_contain_text(
        f"4 examples sent to the review queue of {dataset.name}."
    )
    copies = list(Example.objects.filter(metadata__eval_run=run.pk).order_by("pk"))
    origin_of = {c.pk: c.derived_from_id for c in copies}
    assert set(origin_of.values()) == {item.example_id for item in validation}

    # --- the card names each copy's origin; the lead approves all four -------------------------
    page.locator("#failure-rows tbody tr").first.get_by_role("link", name="sent").click()
    for remaining in (4, 3, 2, 1):
        expect(page.locator("#review-counts")).to_contain_text(f"{remaining} pending")
        shown = int(page.locator("article.example").get_attribute("data-example-id") or 0)
        expect(page.locator("#card-origin")).to_contain_text(
            f"Made from example {origin_of[shown]} (evaluation failure)."
        )
        expect(page.locator("#card-origin")).to_contain_text(f"held out in {v1}")
        page.locator("#approve-button").click()
    expect(page.locator("#review-counts")).to_contain_text("0 pending")
    assert {c.status for c in Example.objects.filter(pk__in=origin_of)} == {ExampleStatus.APPROVED}

    # --- freeze: every copy lands in validation, beside its origin ------------------------------
    freeze(page, live_server, project.pk, dataset.pk)
    expect(page.get_by_role("heading", name=f"{dataset.name} v2")).to_be_visible()
    v2 = DatasetVersion.objects.get(dataset=dataset, number=2)
    after = sides(v2)
    assert {after[pk] for pk in origin_of} == {Split.VALIDATION}
    assert {after[origin] for origin in origin_of.values()} == {Split.VALIDATION}
    expect(page.locator(".facts")).to_contain_text("24 (16 train / 8 validation)")

    # --- moving one copy to training warns, and the next freeze retires its origin -------------
    moved = copies[0]
    page.goto(
        f"{live_server.url}/projects/{project.pk}/datasets/{dataset.pk}/review/?example={moved.pk}"
    )
    page.locator("#move-to-training").click()
    # The origin leaves, and so does the copy itself, which v2 froze into validation with it.
    expect(page.locator("#shrink-warning")).to_contain_text(
        f"leaves validation with 1 copy of it: the evaluation set of {dataset.name} shrinks "
        "from 8 to 6 items"
    )
    page.get_by_label("Reason (recorded)").fill("the reviewer relabelled it")
    page.locator("#move-to-training-confirm").click()
    expect(page.locator(".messages")).to_contain_text("shrinks from 8 to 6 items")
    expect(page.locator("#card-origin")).to_contain_text(f"Moved to training by {lead.username}")

    freeze(page, live_server, project.pk, dataset.pk)
    expect(page.get_by_role("heading", name=f"{dataset.name} v3")).to_be_visible()
    expect(page.locator("#version-retired")).to_contain_text(f"#{moved.derived_from_id}")
    v3 = DatasetVersion.objects.get(dataset=dataset, number=3)
    assert (sides(v3)[moved.pk], sides(v3)[moved.derived_from_id]) == (Split.TRAIN, Split.TRAIN)
    assert v3.validation_count == 6
    expect(page.locator(".facts")).to_contain_text("24 (18 train / 6 validation)")
