"""The evaluation page's label section and the API's label keys, on runs nobody tuned to be
easy: a hundred labels with quotes, markup and accents, up to 200 characters, thousands of
items with skewed frequencies, answers that confuse, invent and mis-spell labels. The page
lists the most confused pairs first and each label worst F1 first, carries the heat map's
non-zero cells only, escapes every label, makes as many queries for 2,000 items as for 40,
and says why label metrics were left out when they were."""

from __future__ import annotations

import json
from collections import Counter
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient
from sklearn.metrics import f1_score

from catalog.models import BaseModel
from evaluation.models import Candidate, EvalRun
from ftportal.models import Project
from tests.api.builders import api, token_client
from tests.charts import page_charts
from tests.evaluation.label_runs import (
    Answers,
    awkward_labels,
    labelled_run,
    noisy_answers,
    skewed_expected,
)

pytestmark = pytest.mark.django_db

SCRIPT_LABEL = "<script>alert('label')</script>"


class _Tables(HTMLParser):
    """Each table's class, the candidate of the <details> around it, and its body rows as the
    text a person reads (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[tuple[str, str | None, list[list[str]]]] = []
        self._candidate: str | None = None
        self._rows: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "details":
            self._candidate = found.get("data-candidate")
        elif tag == "table":
            self._rows = []
            self.tables.append(
                (found.get("class") or found.get("id") or "", self._candidate, self._rows)
            )
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._rows is not None:
            self._rows.append([])
        elif tag in ("td", "th") and self._in_body:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self._candidate = None
        elif tag == "tbody":
            self._in_body = False
        elif tag in ("td", "th") and self._cell is not None and self._rows:
            self._rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str, kind: str, candidate: Candidate | None = None) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(html)
    want = None if candidate is None else str(candidate.pk)
    return [
        rows
        for name, owner, rows in parser.tables
        if name == kind and (want is None or owner == want)
    ]


def page_of(client: Client, run: EvalRun) -> str:
    response = client.get(reverse("eval_detail", args=[run.project_id, run.pk]))
    assert response.status_code == 200
    return response.content.decode()


def many_label_run(
    project: Project, user: User, base_model: BaseModel, items: int, labels: int = 100
) -> EvalRun:
    names = awkward_labels(labels)
    expected = skewed_expected(names, items)
    confident = noisy_answers(
        "label scoring", names, expected, right=0.6, invalid=0.0, seed=3, confident=True
    )
    return labelled_run(
        project=project,
        user=user,
        base_model=base_model,
        labels=names,
        expected=expected,
        candidates=[
            noisy_answers("fine-tuned", names, expected, right=0.55, invalid=0.25, seed=1),
            noisy_answers("5-shot", names, expected, right=0.1, invalid=0.6, seed=2),
            Answers(confident.label, confident.outputs, confident.confidences, abstain_below=0.5),
        ],
    )


def test_a_hundred_awkward_labels_read_worst_first_and_escaped(
    client: Client, project: Project, lead: User, base_model: BaseModel
) -> None:
    run = many_label_run(project, lead, base_model, items=3000)
    fine_tuned, few_shot, scoring = run.candidates.order_by("position")
    client.force_login(lead)

    html = page_of(client, run)

    # Every label is text: the markup label never reaches the page as markup.
    assert SCRIPT_LABEL not in html
    assert "&lt;script&gt;alert(&#x27;label&#x27;)&lt;/script&gt;" in html
    summary = tables(html, "label-summary")[0]
    assert [row[0] for row in summary] == ["fine-tuned", "5-shot", "label scoring"]
    stored = fine_tuned.metrics["labels"]
    assert summary[0][1:4] == [
        f"{stored['accuracy'] * 100:.1f} %",
        f"{stored['macro_f1'] * 100:.1f} %",
        f"{stored['invalid']} ({stored['invalid_rate'] * 100:.1f} %)",
    ]
    assert summary[0][4] == "100 of the contract's 100"

    # The most confused pairs, counted here from the answers themselves.
    items = list(run.dataset_version.items.order_by("position"))
    expected = [item.messages[-1]["content"] for item in items]
    outputs = list(fine_tuned.results.order_by("item__position").values_list("output", flat=True))
    label_set = set(stored["confusion"]["labels"])
    pairs = Counter(
        (truth, answer.strip() if answer.strip() in label_set else "(invalid)")
        for truth, answer in zip(expected, outputs, strict=True)
        if answer.strip() != truth
    )
    shown = tables(html, "confused-pairs", fine_tuned)[0]
    assert len(shown) == 20  # the first twenty of many
    top_count = pairs.most_common(1)[0][1]
    assert int(shown[0][2]) == top_count
    assert (shown[0][0], shown[0][1]) in {pair for pair, n in pairs.items() if n == top_count}
    assert [int(row[2]) for row in shown] == sorted((int(row[2]) for row in shown), reverse=True)
    assert f"of {len(pairs)} confused pairs" in " ".join(html.split())

    # Each label, worst F1 first; the F1s are scikit-learn's reading of the same answers.
    per_label = tables(html, "per-label", fine_tuned)[0]
    assert len(per_label) == 100
    predicted = [a.strip() if a.strip() in label_set else "\x00" for a in outputs]
    present = stored["confusion"]["labels"]
    f1 = dict(
        zip(
            present,
            f1_score(expected, predicted, labels=present, average=None, zero_division=0),
            strict=True,
        )
    )
    assert per_label[0][0] == min(
        present, key=lambda label: (f1[label], -expected.count(label), label)
    )
    assert per_label[-1][0] == max(f1, key=lambda label: f1[label])
    assert SCRIPT_LABEL in {row[0] for row in per_label}  # read back as the label it is

    # The heat map carries the non-zero cells only, with every label for its axes.
    charts = page_charts(html)  # every canvas has its data
    heat = charts[f"confusion-heatmap-{fine_tuned.pk}"]
    cells = [cell for group in heat["groups"] for cell in group["cells"]]
    matrix = stored["confusion"]["matrix"]
    assert len(cells) == sum(1 for row in matrix for n in row if n)
    assert heat["y"]["labels"] == present and heat["x"]["labels"] == [*present, "(invalid)"]
    assert sum(cell[2] for cell in cells) == 3000

    # Label scoring's candidate: abstention at its threshold and calibration, with its chart.
    abstention = scoring.metrics["abstention"]
    assert summary[2][5].startswith(f"{abstention['answered']} / {abstention['abstained']}")
    assert "(below 50.0 % confidence)" in summary[2][5]
    reliability = charts[f"reliability-{scoring.pk}"]
    bins = [b for b in scoring.metrics["calibration"]["bins"] if b["count"]]
    assert reliability["series"][0]["points"] == [[b["confidence"], b["accuracy"]] for b in bins]
    assert f"reliability-{few_shot.pk}" not in charts
    assert len(tables(html, "calibration-bins", scoring)[0]) == 10
    assert not tables(html, "calibration-bins", few_shot)


def test_the_page_asks_as_many_queries_for_thousands_of_items_as_for_a_few(
    client: Client, project: Project, lead: User, base_model: BaseModel, django_assert_num_queries
) -> None:
    small = many_label_run(project, lead, base_model, items=40, labels=20)
    large = many_label_run(project, lead, base_model, items=2000)
    client.force_login(lead)
    page_of(client, small)  # sessions and the like, once

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        small_html = page_of(client, small)
    with CaptureQueriesContext(connection) as many:
        large_html = page_of(client, large)

    assert len(many) == len(few)
    # The page grows with the labels (100 x 3 per-label rows, heat map cells), not the items.
    assert len(large_html) < 1_500_000
    assert len(small_html) < len(large_html)
    stored = max(len(json.dumps(c.metrics)) for c in large.candidates.all())
    assert stored < 100_000


def test_why_label_metrics_were_left_out_is_on_the_page(
    client: Client, project: Project, lead: User, base_model: BaseModel
) -> None:
    expected = [f"a free-text answer about topic {i}" for i in range(30)]
    run = labelled_run(
        project=project,
        user=lead,
        base_model=base_model,
        labels=None,
        expected=expected,
        candidates=[Answers("base", [f"something {i}" for i in range(30)])],
    )
    client.force_login(lead)

    html = page_of(client, run)

    candidate = run.candidates.get()
    reason = "the expected answers have 30 distinct values among 30 items"
    assert reason in candidate.metrics["labels_left_out"]["reason"]
    assert "No label metrics for base: " + reason in " ".join(html.split())
    assert not tables(html, "label-summary")


def test_many_labels_without_a_contract_are_read_past_the_old_cap_of_twenty(
    client: Client, project: Project, lead: User, base_model: BaseModel
) -> None:
    names = [f"intent {i}" for i in range(45)]
    expected = skewed_expected(names, 600)
    run = labelled_run(
        project=project,
        user=lead,
        base_model=base_model,
        labels=None,
        expected=expected,
        candidates=[noisy_answers("base", names, expected, right=0.5, invalid=0.2, seed=4)],
    )
    client.force_login(lead)

    html = page_of(client, run)

    stats = run.candidates.get().metrics["labels"]
    assert stats["source"] == "expected_answers" and stats["averaged_over"] == 45
    assert len(tables(html, "per-label")[0]) == 45


def test_a_summary_stored_before_invalid_answers_had_a_column_still_reads(
    client: Client, project: Project, lead: User, base_model: BaseModel
) -> None:
    run = labelled_run(
        project=project,
        user=lead,
        base_model=base_model,
        labels=["billing", "bug"],
        expected=["billing", "bug", "bug", "billing"],
        candidates=[Answers("old", ["billing", "billing", "bug", "billing"])],
    )
    candidate = run.candidates.get()
    # What the worker stored before: a square matrix over expected and answered labels.
    candidate.metrics = {
        "examples": 4,
        "means": {"exact_match": 0.75},
        "labels": {
            "accuracy": 0.75,
            "macro_f1": 0.7333,
            "confusion": {"labels": ["billing", "bug"], "matrix": [[2, 0], [1, 1]]},
        },
    }
    candidate.save()
    client.force_login(lead)

    html = page_of(client, run)

    assert tables(html, "label-summary")[0][0][1:4] == ["75.0 %", "73.3 %", "–"]
    assert tables(html, "confused-pairs", candidate)[0] == [["bug", "billing", "1", "50.0 %"]]
    # F1 billing = 2*2/(3+2) = 80 %, bug = 2*1/(1+2) = 66.7 %: bug first.
    assert [row[:2] for row in tables(html, "per-label", candidate)[0]] == [
        ["bug", "66.7 %"],
        ["billing", "80.0 %"],
    ]


def test_the_api_returns_the_label_keys_and_documents_them(
    project: Project, lead: User, base_model: BaseModel
) -> None:
    run = many_label_run(project, lead, base_model, items=300, labels=64)
    client: APIClient = token_client(lead)

    response = client.get(api(project, f"evaluations/{run.pk}/"))

    assert response.status_code == 200, response.content
    fine_tuned, _, scoring = response.json()["candidates"]
    labels = fine_tuned["metrics"]["labels"]
    assert {"accuracy", "macro_f1", "invalid", "invalid_rate", "per_label", "confusion"} <= set(
        labels
    )
    assert labels["confusion"]["invalid_column"] == "(invalid)"
    assert len(labels["confusion"]["matrix"][0]) == len(labels["confusion"]["labels"]) + 1
    assert set(labels["per_label"][0]) == {
        "label",
        "precision",
        "recall",
        "f1",
        "support",
        "answered",
    }
    assert scoring["metrics"]["abstention"]["threshold"] == 0.5
    assert len(scoring["metrics"]["calibration"]["bins"]) == 10

    schema = client.get("/api/schema/?format=json").json()
    described = schema["components"]["schemas"]["CandidateOutput"]["properties"]["metrics"][
        "description"
    ]
    for key in (
        "invalid_rate",
        "per_label",
        "invalid_column",
        "labels_left_out",
        "abstention",
        "calibration",
    ):
        assert key in described
