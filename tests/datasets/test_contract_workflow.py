"""Answer contracts through the product: set on the dataset (page and API), flagged at import,
counted by the quality and readiness reports, enforced at freeze, shown on the review card."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel
from datasets.models import Dataset, DatasetVersion, Example, ExampleStatus, ReviewDecision
from datasets.quality.findings import CONTRACT_VIOLATION
from datasets.quality.services import (
    analysis_run_create,
    analysis_run_execute,
    dataset_version_readiness,
)
from datasets.services import dataset_version_freeze
from ftportal.errors import ApplicationError
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import token_client
from tests.factories import chat, import_bytes, jsonl

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
TRIAGE = {
    "kind": "json_schema",
    "schema": {
        "type": "object",
        "properties": {
            "category": {"enum": ["billing", "bug", "account", "feature_request"]},
            "priority": {"enum": ["low", "medium", "high"]},
        },
        "required": ["category", "priority"],
        "additionalProperties": False,
    },
}
NOT_JSON = "Category: billing, priority: high"


def with_answer(answer: str, ticket: str = "I was charged twice") -> list[dict[str, str]]:
    messages = chat(ticket, "billing", "high")
    messages[-1]["content"] = answer
    return messages


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="triage", answer_contract=TRIAGE)


@pytest.fixture
def lead(make_member: Callable[..., User]) -> User:
    return make_member(Role.ML_LEAD)


def api(project: Project, path: str) -> str:
    return f"/api/projects/{project.pk}/{path}"


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


# -- setting the contract ----------------------------------------------------------------------


def test_a_lead_sets_reads_and_clears_the_contract_through_the_api(
    project: Project, lead: User, make_member: Callable[..., User]
) -> None:
    plain = Dataset.objects.create(project=project, name="plain")
    client = token_client(lead)
    response = client.post(
        api(project, f"datasets/{plain.pk}/contract/"), {"answer_contract": TRIAGE}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["description"] == "JSON matching a schema with category, priority"
    plain.refresh_from_db()
    assert plain.answer_contract == TRIAGE
    # Every member reads it, in the dataset too.
    reader = token_client(make_member(Role.MANAGER))
    assert reader.get(api(project, f"datasets/{plain.pk}/contract/")).json()["answer_contract"] == (
        TRIAGE
    )
    assert reader.get(api(project, f"datasets/{plain.pk}/")).json()["answer_contract"] == TRIAGE
    cleared = client.post(
        api(project, f"datasets/{plain.pk}/contract/"), {"answer_contract": {}}, format="json"
    )
    assert cleared.json()["answer_contract"] == {}


@pytest.mark.parametrize(
    ("contract", "field"),
    [
        ({"kind": "json_schema", "schema": {"type": "objec"}}, "answer_contract.schema"),
        ({"kind": "regex", "pattern": "(unclosed"}, "answer_contract.pattern"),
        ({"kind": "label_set", "labels": []}, "answer_contract.labels"),
        ({"kind": "grammar"}, "answer_contract.kind"),
    ],
)
def test_a_bad_contract_is_a_400_naming_the_field_and_keeps_the_old_one(
    project: Project, dataset: Dataset, lead: User, contract: dict[str, object], field: str
) -> None:
    response = token_client(lead).post(
        api(project, f"datasets/{dataset.pk}/contract/"),
        {"answer_contract": contract},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert response.json()["error"]["message"].startswith(f"{field}: ")
    dataset.refresh_from_db()
    assert dataset.answer_contract == TRIAGE


def test_a_label_set_is_derived_from_the_approved_answers_with_counts(
    project: Project, lead: User
) -> None:
    labelled = Dataset.objects.create(project=project, name="labels")
    for answer, status in [
        ("billing", ExampleStatus.APPROVED),
        ("billing", ExampleStatus.APPROVED),
        ("bug", ExampleStatus.APPROVED),
        ("typo-label", ExampleStatus.PENDING),  # not approved: not a label yet
    ]:
        Example.objects.create(dataset=labelled, messages=with_answer(answer), status=status)
    response = token_client(lead).get(
        api(project, f"datasets/{labelled.pk}/contract/derived-labels/")
    )
    assert response.status_code == 200
    assert response.json() == {
        "answer_contract": {"kind": "label_set", "labels": ["billing", "bug"]},
        "labels": [{"label": "billing", "count": 2}, {"label": "bug", "count": 1}],
    }
    labelled.refresh_from_db()
    assert labelled.answer_contract == {}  # deriving saves nothing
    page = logged_in(lead).get(
        reverse("dataset_detail", args=[project.pk, labelled.pk]) + "?derive=labels"
    )
    body = page.content.decode()
    assert 'id="derived-labels"' in body and "<td>2</td>" in body
    assert "billing\nbug</textarea>" in body


def test_the_dataset_page_sets_a_contract_and_shows_errors_with_the_field(
    project: Project, lead: User, make_member: Callable[..., User]
) -> None:
    plain = Dataset.objects.create(project=project, name="plain")
    url = reverse("dataset_contract", args=[project.pk, plain.pk])
    client = logged_in(lead)
    saved = client.post(url, {"kind": "label_set", "value": "billing\r\n\r\nbug\r\n"})
    assert saved.status_code == 302
    plain.refresh_from_db()
    assert plain.answer_contract == {"kind": "label_set", "labels": ["billing", "bug"]}

    broken = client.post(url, {"kind": "json_schema", "value": '{"type": "object",'})
    assert broken.status_code == 400
    assert "answer_contract.schema: not JSON" in broken.content.decode()
    plain.refresh_from_db()
    assert plain.answer_contract == {"kind": "label_set", "labels": ["billing", "bug"]}

    detail = client.get(reverse("dataset_detail", args=[project.pk, plain.pk])).content.decode()
    assert "one of 2 labels: billing, bug" in detail and 'id="contract-form"' in detail

    reviewer = logged_in(make_member(Role.REVIEWER))
    assert reviewer.post(url, {"kind": "", "value": ""}).status_code == 403
    plain.refresh_from_db()
    assert plain.answer_contract != {}
    reviewer_page = reviewer.get(reverse("dataset_detail", args=[project.pk, plain.pk]))
    assert "one of 2 labels: billing, bug" in reviewer_page.content.decode()
    assert 'id="contract-form"' not in reviewer_page.content.decode()


# -- import ------------------------------------------------------------------------------------


def test_import_keeps_answers_that_break_the_contract_and_reports_their_lines(
    project: Project, dataset: Dataset, lead: User
) -> None:
    data = jsonl(
        [
            chat("I was charged twice", "billing", "high"),
            with_answer(NOT_JSON, "Refund please"),
            chat("App crashes", "bug", "medium"),
            with_answer('{"category": "billing", "priority": "urgent"}', "Late invoice"),
        ]
    )
    batch = import_bytes(dataset=dataset, data=data, user=lead)
    assert batch.imported_count == 4
    assert batch.contract_violations["count"] == 2
    assert [v["line"] for v in batch.contract_violations["lines"]] == [2, 4]
    assert "not valid JSON" in batch.contract_violations["lines"][0]["message"]
    assert "'urgent' is not one of" in batch.contract_violations["lines"][1]["message"]
    assert Example.objects.filter(dataset=dataset).count() == 4

    shown = token_client(lead).get(api(project, f"imports/{batch.pk}/"))
    assert shown.status_code == 200
    page = logged_in(lead).get(reverse("import_detail", args=[project.pk, batch.pk]))
    assert 'id="import-contract"' in page.content.decode()
    assert "2 imported example(s) break the answer contract" in page.content.decode()


def test_an_upload_through_the_page_says_how_many_lines_break_the_contract(
    project: Project, dataset: Dataset, lead: User
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = jsonl([chat("Charged twice", "billing", "high"), with_answer(NOT_JSON, "Refund")])
    client = logged_in(lead)
    response = client.post(
        reverse("dataset_import", args=[project.pk, dataset.pk]),
        {"file": SimpleUploadedFile("t.jsonl", data)},
        follow=True,
    )
    body = response.content.decode()
    assert "Imported 2 example(s) from t.jsonl; 1 break the answer contract (line(s) 2)" in body


def test_the_import_api_returns_the_contract_report(
    project: Project, dataset: Dataset, lead: User
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = jsonl([with_answer(NOT_JSON), chat("App crashes", "bug", "medium")])
    response = token_client(lead).post(
        api(project, f"datasets/{dataset.pk}/imports/"),
        {"file": SimpleUploadedFile("t.jsonl", data)},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert response.json()["contract_violations"]["count"] == 1
    assert response.json()["contract_violations"]["lines"][0]["line"] == 1


# -- freeze and readiness ----------------------------------------------------------------------


def approve(dataset: Dataset, *answers: str) -> list[Example]:
    return [
        Example.objects.create(
            dataset=dataset, messages=with_answer(a, f"ticket {i}"), status=ExampleStatus.APPROVED
        )
        for i, a in enumerate(answers)
    ]


GOOD = '{"category": "billing", "priority": "high"}'


def test_freeze_refuses_approved_answers_that_break_the_contract_naming_them(
    project: Project, dataset: Dataset, lead: User
) -> None:
    examples = approve(dataset, GOOD, NOT_JSON, GOOD)
    with pytest.raises(ApplicationError) as refused:
        dataset_version_freeze(dataset=dataset, user=lead)
    assert refused.value.extra["field"] == "contract_override_reason"
    assert f"example {examples[1].pk} (The answer is not valid JSON" in refused.value.message
    assert refused.value.extra["contract_violations"][0]["example"] == examples[1].pk
    assert not DatasetVersion.objects.exists()


def test_the_lead_may_freeze_anyway_with_a_reason_which_the_version_records(
    project: Project, dataset: Dataset, lead: User
) -> None:
    examples = approve(dataset, GOOD, NOT_JSON, GOOD)
    version = dataset_version_freeze(
        dataset=dataset, user=lead, contract_override_reason="  legacy answers; fixing in v2 "
    )
    assert version.answer_contract == TRIAGE
    assert version.contract_override["reason"] == "legacy answers; fixing in v2"
    assert [v["example"] for v in version.contract_override["examples"]] == [examples[1].pk]
    # The readiness report counts the violation as an error, against the frozen contract.
    report = dataset_version_readiness(version=version)
    assert report["findings"][CONTRACT_VIOLATION]["examples"] == 1
    assert report["findings"][CONTRACT_VIOLATION]["severity"] == "error"
    assert report["examples_with_errors"] == 1
    assert report["contract_override"]["reason"] == "legacy answers; fixing in v2"


def test_a_version_keeps_the_contract_it_was_frozen_under(
    project: Project, dataset: Dataset, lead: User
) -> None:
    approve(dataset, GOOD, GOOD)
    version = dataset_version_freeze(dataset=dataset, user=lead)
    assert version.contract_override == {}
    dataset.answer_contract = {"kind": "label_set", "labels": ["x"]}
    dataset.save()
    version.refresh_from_db()
    assert version.answer_contract == TRIAGE
    assert CONTRACT_VIOLATION not in dataset_version_readiness(version=version)["findings"]


def test_freezing_through_the_api_and_the_page_shows_the_violations(
    project: Project, dataset: Dataset, lead: User
) -> None:
    examples = approve(dataset, GOOD, NOT_JSON, GOOD)
    client = token_client(lead)
    refused = client.post(api(project, f"datasets/{dataset.pk}/versions/"), {}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["contract_violations"][0]["example"] == examples[1].pk
    page = logged_in(lead).post(reverse("dataset_freeze", args=[project.pk, dataset.pk]), {})
    assert page.status_code == 400
    assert 'id="freeze-contract-violations"' in page.content.decode()
    assert f"example {examples[1].pk}</a>" in page.content.decode()
    frozen = client.post(
        api(project, f"datasets/{dataset.pk}/versions/"),
        {"contract_override_reason": "known"},
        format="json",
    )
    assert frozen.status_code == 201
    assert frozen.json()["contract_override"]["reason"] == "known"
    assert frozen.json()["answer_contract"] == TRIAGE


def test_the_quality_analysis_stores_contract_violations_as_errors(
    project: Project, dataset: Dataset, lead: User, base_model: BaseModel
) -> None:
    good, bad = approve(dataset, GOOD, NOT_JSON)
    run = analysis_run_execute(
        run_id=analysis_run_create(dataset=dataset, base_model=base_model, user=lead).pk
    )
    assert run.status == "succeeded", run.failure_message
    found = list(run.findings.filter(kind=CONTRACT_VIOLATION).values_list("example_id", "severity"))
    assert found == [(bad.pk, "error")]
    assert run.stats["examples_with_errors"] == 1
    page = logged_in(lead).get(reverse("dataset_quality", args=[project.pk, dataset.pk]))
    assert 'data-kind="contract_violation"' in page.content.decode()
    assert "a right answer is JSON matching a schema with category, priority" in (
        page.content.decode()
    )
    assert "1 with errors" in page.content.decode()


# -- the review card ---------------------------------------------------------------------------


def card(client: Client, project: Project, dataset: Dataset, example: Example) -> str:
    url = reverse("review_queue", args=[project.pk, dataset.pk]) + f"?example={example.pk}"
    return client.get(url).content.decode()


def test_the_card_shows_a_contract_finding_before_any_analysis_ran(
    project: Project, dataset: Dataset, make_member: Callable[..., User]
) -> None:
    broken = Example.objects.create(dataset=dataset, messages=with_answer(NOT_JSON))
    fine = Example.objects.create(dataset=dataset, messages=with_answer(GOOD, "other"))
    client = logged_in(make_member(Role.REVIEWER))
    body = card(client, project, dataset, broken)
    assert 'data-kind="contract_violation"' in body
    assert "<strong>Breaks the answer contract</strong>: The answer is not valid JSON" in body
    assert "Answer contract: a right answer is JSON matching a schema with category" in body
    assert 'data-kind="contract_violation"' not in card(client, project, dataset, fine)


def test_the_card_shows_analysis_findings_in_words_and_the_live_contract_check(
    project: Project, dataset: Dataset, lead: User, base_model: BaseModel
) -> None:
    broken = Example.objects.create(
        dataset=dataset, messages=with_answer(NOT_JSON, "Mail me at sam@example.com")
    )
    run = analysis_run_execute(
        run_id=analysis_run_create(dataset=dataset, base_model=base_model, user=lead).pk
    )
    assert run.findings.filter(example=broken, kind=CONTRACT_VIOLATION).exists()
    client = logged_in(lead)
    body = card(client, project, dataset, broken)
    assert "<strong>E-mail addresses</strong>" in body
    assert body.count('data-kind="contract_violation"') == 1  # live, not twice
    # Fixed after the analysis: the stale finding is not shown, the live check passes.
    Example.objects.filter(pk=broken.pk).update(
        messages=with_answer(GOOD, "Mail me at sam@example.com")
    )
    body = card(client, project, dataset, broken)
    assert 'data-kind="contract_violation"' not in body
    assert "<strong>E-mail addresses</strong>" in body


def decide(client: Client, project: Project, example: Example, **data: str) -> str:
    url = reverse("review_decide", args=[project.pk, example.pk])
    response = client.post(url, {"revision": str(example.revision), **data}, headers=HTMX)
    assert response.status_code == 200, response.content
    return response.content.decode()


def test_approving_an_answer_that_breaks_the_contract_asks_first(
    project: Project, dataset: Dataset, make_member: Callable[..., User]
) -> None:
    broken = Example.objects.create(dataset=dataset, messages=with_answer(NOT_JSON))
    client = logged_in(make_member(Role.REVIEWER))
    body = decide(client, project, broken, action="approve")
    assert 'id="contract-confirm"' in body and "Approve anyway" in body
    broken.refresh_from_db()
    assert broken.status == ExampleStatus.PENDING and not ReviewDecision.objects.exists()

    decide(client, project, broken, action="approve", contract_confirmed="1")
    broken.refresh_from_db()
    assert broken.status == ExampleStatus.APPROVED


def test_an_edit_that_keeps_the_contract_is_saved_at_once_and_one_that_breaks_it_asks(
    project: Project, dataset: Dataset, make_member: Callable[..., User]
) -> None:
    first = Example.objects.create(dataset=dataset, messages=with_answer(NOT_JSON))
    second = Example.objects.create(dataset=dataset, messages=with_answer(NOT_JSON, "again"))
    client = logged_in(make_member(Role.REVIEWER))
    decide(client, project, first, action="edit", answer=GOOD)
    first.refresh_from_db()
    assert first.status == ExampleStatus.APPROVED and first.messages[-1]["content"] == GOOD

    wrong = '{"category": "billing", "priority": "urgent"}'
    body = decide(client, project, second, action="edit", answer=wrong, comment="hm")
    assert 'id="contract-confirm"' in body and "&#x27;urgent&#x27; is not one of" in body
    second.refresh_from_db()
    assert second.status == ExampleStatus.PENDING
    # The confirmation carries the edited answer and the comment through.
    decide(
        client, project, second, action="edit", answer=wrong, comment="hm", contract_confirmed="1"
    )
    second.refresh_from_db()
    assert second.messages[-1]["content"] == wrong
    assert ReviewDecision.objects.filter(example=second).get().comment == "hm"


def test_the_edit_preview_checks_the_contract_as_the_reviewer_types(
    project: Project, dataset: Dataset, make_member: Callable[..., User]
) -> None:
    broken = Example.objects.create(dataset=dataset, messages=with_answer(NOT_JSON))
    client = logged_in(make_member(Role.REVIEWER))
    url = reverse("review_diff", args=[project.pk, broken.pk])
    still = client.post(url, {"answer": '{"category": "billing"}'}, headers=HTMX).content.decode()
    assert "Breaks the answer contract: the answer: &#x27;priority&#x27; is a required" in still
    fixed = client.post(url, {"answer": GOOD}, headers=HTMX).content.decode()
    assert "Keeps the answer contract." in fixed and "<ins>" in fixed
    plain = Dataset.objects.create(project=project, name="plain")
    free = Example.objects.create(dataset=plain, messages=with_answer(NOT_JSON))
    url = reverse("review_diff", args=[project.pk, free.pk])
    assert "answer contract" not in client.post(url, {"answer": "x"}, headers=HTMX).content.decode()


def test_a_contract_message_is_escaped_on_the_card(
    project: Project, make_member: Callable[..., User]
) -> None:
    labelled = Dataset.objects.create(
        project=project, name="labels", answer_contract={"kind": "label_set", "labels": ["<b>"]}
    )
    example = Example.objects.create(
        dataset=labelled, messages=with_answer("<script>window.__x=1</script>")
    )
    body = card(logged_in(make_member(Role.REVIEWER)), project, labelled, example)
    assert "<script>window.__x=1</script>" not in body
    assert "&lt;script&gt;window.__x=1&lt;/script&gt;" in body


def test_the_readiness_api_reports_the_contract(
    project: Project, dataset: Dataset, lead: User, make_member: Callable[..., User]
) -> None:
    approve(dataset, GOOD, NOT_JSON, GOOD)
    version = dataset_version_freeze(dataset=dataset, user=lead, contract_override_reason="ok")
    report = token_client(make_member(Role.MANAGER)).get(
        api(project, f"dataset-versions/{version.pk}/readiness/")
    )
    assert report.status_code == 200
    data = report.json()
    assert data["answer_contract"] == "JSON matching a schema with category, priority"
    assert data["findings"][CONTRACT_VIOLATION]["examples"] == 1
    assert json.dumps(data["contract_override"]["examples"][0]["message"]).startswith('"The')


def test_the_version_page_names_its_contract_and_the_override(
    project: Project, dataset: Dataset, lead: User, make_member: Callable[..., User]
) -> None:
    approve(dataset, GOOD, NOT_JSON, GOOD)
    version = dataset_version_freeze(
        dataset=dataset, user=lead, contract_override_reason="fixing <next> week"
    )
    page = logged_in(make_member(Role.MANAGER)).get(
        reverse("version_detail", args=[project.pk, version.pk])
    )
    body = page.content.decode()
    assert "JSON matching a schema with category, priority" in body
    assert "frozen with 1 approved example(s) that break it, because: fixing &lt;next&gt; week" in (
        body
    )


def test_approving_a_broken_answer_through_the_api_needs_the_confirmation(
    project: Project, dataset: Dataset, make_member: Callable[..., User]
) -> None:
    broken = Example.objects.create(dataset=dataset, messages=with_answer(NOT_JSON))
    client = token_client(make_member(Role.REVIEWER))
    url = api(project, f"examples/{broken.pk}/review/")
    refused = client.post(url, {"action": "approve", "revision": 0}, format="json")
    assert refused.status_code == 409
    assert refused.json()["error"]["field"] == "contract_confirmed"
    assert "not valid JSON" in refused.json()["error"]["contract_violation"]
    broken.refresh_from_db()
    assert broken.status == ExampleStatus.PENDING and not ReviewDecision.objects.exists()
    assert (
        "not valid JSON"
        in client.get(api(project, f"examples/{broken.pk}/")).json()["contract_violation"]
    )
    # An edit into a valid answer needs no confirmation; rejecting never does.
    edited = client.post(url, {"action": "edit", "answer": GOOD, "revision": 0}, format="json")
    assert edited.status_code == 200, edited.content
    assert edited.json()["contract_violation"] is None
    other = Example.objects.create(dataset=dataset, messages=with_answer(NOT_JSON, "x"))
    url = api(project, f"examples/{other.pk}/review/")
    assert client.post(url, {"action": "reject", "revision": 0}, format="json").status_code == 200
    confirmed = client.post(
        url, {"action": "approve", "contract_confirmed": True, "revision": 1}, format="json"
    )
    assert confirmed.status_code == 200
    assert confirmed.json()["status"] == ExampleStatus.APPROVED


def test_the_queue_filters_on_contract_findings_without_an_analysis(
    project: Project, dataset: Dataset, make_member: Callable[..., User]
) -> None:
    broken = Example.objects.create(dataset=dataset, messages=with_answer(NOT_JSON))
    Example.objects.create(dataset=dataset, messages=with_answer(GOOD, "fine"))
    also = Example.objects.create(dataset=dataset, messages=with_answer("{}", "empty"))
    client = logged_in(make_member(Role.REVIEWER))
    url = reverse("review_queue", args=[project.pk, dataset.pk]) + "?finding=contract_violation"
    body = client.get(url).content.decode()
    assert '<option value="contract_violation" selected>' in body
    assert f'data-example-id="{broken.pk}"' in body
    assert "2 pending example(s) match this filter" in body
    queue = token_client(make_member(Role.REVIEWER)).get(
        api(project, f"datasets/{dataset.pk}/review-queue/?finding=contract_violation")
    )
    assert queue.status_code == 200
    assert queue.json()["matching"] == 2
    assert queue.json()["next"]["id"] == broken.pk
    assert "not valid JSON" in queue.json()["next"]["contract_violation"]
    after = token_client(make_member(Role.REVIEWER)).get(
        api(
            project,
            f"datasets/{dataset.pk}/review-queue/?finding=contract_violation&after={broken.pk}",
        )
    )
    assert after.json()["next"]["id"] == also.pk


def test_a_bulk_approval_says_which_answers_break_the_contract(
    project: Project, dataset: Dataset, make_member: Callable[..., User]
) -> None:
    broken = Example.objects.create(dataset=dataset, messages=with_answer(NOT_JSON))
    Example.objects.create(dataset=dataset, messages=with_answer(GOOD, "fine"))
    client = logged_in(make_member(Role.ML_LEAD))
    url = reverse("review_bulk", args=[project.pk, dataset.pk]) + "?bulk_action=approve"
    body = client.get(url).content.decode()
    assert "1 of the 2 answer(s) break the answer contract" in body
    assert f"?example={broken.pk}" in body
    tag = reverse("review_bulk", args=[project.pk, dataset.pk]) + "?bulk_action=tag&tag_name=x"
    assert 'id="bulk-contract"' not in client.get(tag).content.decode()
