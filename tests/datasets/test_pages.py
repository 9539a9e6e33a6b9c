"""The dataset pages through Django's test client: import errors, the review queue with HTMX, and
example markup escaped on the review, dataset and version pages.

No browser here; tests/e2e drives one. These tests read the HTML a person would see.
"""

from __future__ import annotations

import json
from html import unescape
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from datasets.models import (
    Dataset,
    DatasetVersion,
    Example,
    ExampleStatus,
    ImportBatch,
    ReviewAction,
    ReviewDecision,
)
from ftportal.roles import Role
from tests.pages.builders import HTMX, XSS, assert_escaped, chat, jsonl_line, page_text, upload
from tests.pages.fixtures import hostile_version_fixture  # noqa: F401


class _TableReader(HTMLParser):
    """Collects the text of each cell of the first table with the given class."""

    def __init__(self, css_class: str) -> None:
        super().__init__()
        self.css_class = css_class
        self.depth = 0  # > 0 while inside the wanted table
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "table" and (self.depth or (self.css_class in classes and not self.rows)):
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag == "td":
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1
        elif tag == "td" and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def table_rows(response, css_class: str) -> list[list[str]]:
    reader = _TableReader(css_class)
    reader.feed(response.content.decode())
    return [row for row in reader.rows if row]  # header rows have th cells only


# --- importing ---------------------------------------------------------------------------------

VALID_LINE = jsonl_line("I was charged twice")


@pytest.mark.parametrize(
    ("bad_line", "field", "reason"),
    [
        (b'{"messages": [{"role": "user", "content": "Hi"}', "", "invalid JSON"),
        (b'{"conversation": []}', "messages", 'missing key "messages"'),
        (
            json.dumps(
                {"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Yo"}]}
            ).encode(),
            "messages[1].role",
            "role 'bot' is not allowed",
        ),
        (
            b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',
            "",
            "line is not valid UTF-8 (byte 0xe9",
        ),
    ],
    ids=["malformed-json", "missing-messages", "unknown-role", "not-utf8"],
)
def test_an_import_with_a_bad_line_shows_its_line_number_and_reason_and_stores_nothing(
    client: Client, dataset: Dataset, lead: User, bad_line: bytes, field: str, reason: str
) -> None:
    client.force_login(lead)
    data = b"\n".join([VALID_LINE, bad_line, VALID_LINE]) + b"\n"

    response = client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": upload("tickets.jsonl", data)},
    )

    assert response.status_code == 400
    assert "tickets.jsonl: 1 line(s) have errors; nothing was imported." in page_text(response)
    [row] = table_rows(response, "line-errors")
    assert row[0] == "2"
    assert row[1] == field
    assert reason in unescape(row[2])
    assert Example.objects.filter(dataset=dataset).count() == 0
    assert ImportBatch.objects.count() == 0


def test_an_empty_file_is_refused_with_the_reason_and_stores_nothing(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)
    response = client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": upload("empty.jsonl", b"")},
    )
    assert response.status_code == 400
    [row] = table_rows(response, "line-errors")
    assert row[2] == "file is empty"
    assert Example.objects.count() == 0
    assert ImportBatch.objects.count() == 0


def test_an_import_without_a_file_asks_for_one(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)
    response = client.post(reverse("dataset_import", args=[dataset.project_id, dataset.pk]), {})
    assert response.status_code == 400
    assert "Choose a JSONL file to import." in page_text(response)


def test_import_only_the_valid_lines_imports_the_rest_and_reports_the_skipped_line(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)
    data = b"\n".join([jsonl_line("one"), jsonl_line("two"), b"{not json", jsonl_line("four")])

    response = client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": upload("mixed.jsonl", data), "valid_lines_only": "on"},
        follow=True,
    )

    assert response.status_code == 200
    assert "Imported 3 example(s) from mixed.jsonl, skipped 1 line(s) with errors." in page_text(
        response
    )
    examples = Example.objects.filter(dataset=dataset).order_by("source_line")
    assert [e.source_line for e in examples] == [1, 2, 4]
    assert [e.messages[1]["content"] for e in examples] == ["one", "two", "four"]
    assert {e.status for e in examples} == {ExampleStatus.PENDING}
    [batch] = ImportBatch.objects.all()
    assert [error["line"] for error in batch.errors] == [3]
    assert batch.uploaded_by == lead


def test_import_only_the_valid_lines_still_refuses_a_file_with_no_valid_line(
    client: Client, dataset: Dataset, lead: User
) -> None:
    client.force_login(lead)
    response = client.post(
        reverse("dataset_import", args=[dataset.project_id, dataset.pk]),
        {"file": upload("broken.jsonl", b"{nope\n[1]\n"), "valid_lines_only": "on"},
    )
    assert response.status_code == 400
    assert [row[0] for row in table_rows(response, "line-errors")] == ["1", "2"]
    assert Example.objects.count() == 0


# --- reviewing ---------------------------------------------------------------------------------


@pytest.fixture
def queue(dataset: Dataset) -> list[Example]:
    return [
        Example.objects.create(dataset=dataset, messages=chat(f"Ticket {n}", '{"category": "bug"}'))
        for n in range(3)
    ]


def test_an_htmx_approval_returns_the_next_card_as_a_fragment_and_records_the_decision(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    reviewer = make_member(Role.REVIEWER)
    client.force_login(reviewer)
    first, second, _ = queue

    response = client.post(
        reverse("review_decide", args=[dataset.project_id, first.pk]),
        {"action": "approve", "revision": first.revision},
        headers=HTMX,
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html
    assert f'data-example-id="{second.pk}"' in html
    assert f"Example {first.pk}: approved." in html
    assert "2 pending · 1 approved · 0 rejected" in html
    [decision] = ReviewDecision.objects.all()
    assert (decision.example, decision.reviewer, decision.action) == (
        first,
        reviewer,
        ReviewAction.APPROVE,
    )


def test_an_htmx_edit_saves_the_new_answer_and_approves(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    reviewer = make_member(Role.REVIEWER)
    client.force_login(reviewer)
    first = queue[0]

    response = client.post(
        reverse("review_decide", args=[dataset.project_id, first.pk]),
        {
            "action": "edit",
            "answer": '  {"category": "billing"}  ',
            "comment": "was billing",
            "revision": first.revision,
        },
        headers=HTMX,
    )

    assert response.status_code == 200
    first.refresh_from_db()
    assert first.status == ExampleStatus.APPROVED
    assert first.messages[-1]["content"] == '{"category": "billing"}'
    [decision] = ReviewDecision.objects.all()
    assert decision.action == ReviewAction.EDIT
    assert decision.previous_answer == '{"category": "bug"}'
    assert decision.new_answer == '{"category": "billing"}'
    assert decision.comment == "was billing"


def test_an_htmx_edit_with_an_empty_answer_returns_the_same_card_with_the_error(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    client.force_login(make_member(Role.REVIEWER))
    first = queue[0]

    response = client.post(
        reverse("review_decide", args=[dataset.project_id, first.pk]),
        {"action": "edit", "answer": "   ", "revision": first.revision},
        headers=HTMX,
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert "<html" not in html
    assert f'data-example-id="{first.pk}"' in html
    assert "The edited answer is empty" in html
    first.refresh_from_db()
    assert first.status == ExampleStatus.PENDING
    assert ReviewDecision.objects.count() == 0


def test_the_last_decision_leaves_nothing_to_review(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    client.force_login(make_member(Role.REVIEWER))
    for example in queue:
        response = client.post(
            reverse("review_decide", args=[dataset.project_id, example.pk]),
            {
                "action": "reject" if example is queue[1] else "approve",
                "revision": example.revision,
            },
            headers=HTMX,
        )
    html = response.content.decode()
    assert "Nothing left to review in this dataset." in html
    assert "0 pending · 2 approved · 1 rejected" in html


def test_an_htmx_request_for_the_queue_returns_only_the_card(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    client.force_login(make_member(Role.REVIEWER))
    url = reverse("review_queue", args=[dataset.project_id, dataset.pk])

    fragment = client.get(url, {"after": queue[0].pk}, headers=HTMX).content.decode()
    full_page = client.get(url).content.decode()

    assert "<html" not in fragment
    assert f'data-example-id="{queue[1].pk}"' in fragment
    assert "<html" in full_page
    assert f'data-example-id="{queue[0].pk}"' in full_page


def test_a_review_without_htmx_redirects_back_to_the_queue(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    client.force_login(make_member(Role.REVIEWER))
    response = client.post(
        reverse("review_decide", args=[dataset.project_id, queue[0].pk]),
        {"action": "reject", "revision": queue[0].revision},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("review_queue", args=[dataset.project_id, dataset.pk])
    queue[0].refresh_from_db()
    assert queue[0].status == ExampleStatus.REJECTED


def test_an_unknown_review_action_is_refused_and_records_nothing(
    client: Client, dataset: Dataset, queue: list[Example], make_member
) -> None:
    client.force_login(make_member(Role.REVIEWER))
    response = client.post(
        reverse("review_decide", args=[dataset.project_id, queue[0].pk]), {"action": "delete"}
    )
    assert response.status_code == 400
    assert "Unknown review action" in page_text(response)
    assert ReviewDecision.objects.count() == 0


# --- escaping ----------------------------------------------------------------------------------


def test_example_markup_is_escaped_on_the_review_page(
    client: Client, dataset: Dataset, lead: User
) -> None:
    hostile = Example.objects.create(dataset=dataset, messages=chat(f"Help {XSS}", f"{XSS} ok"))
    client.force_login(lead)
    url = reverse("review_queue", args=[dataset.project_id, dataset.pk])
    assert_escaped(client.get(url, {"example": hostile.pk}))
    assert_escaped(client.get(url, {"example": hostile.pk}, headers=HTMX))


def test_example_markup_is_escaped_on_the_dataset_and_version_pages(
    client: Client, dataset: Dataset, lead: User, hostile_version: DatasetVersion
) -> None:
    client.force_login(lead)
    assert_escaped(client.get(reverse("dataset_detail", args=[dataset.project_id, dataset.pk])))
    assert_escaped(
        client.get(reverse("version_detail", args=[dataset.project_id, hostile_version.pk]))
    )
