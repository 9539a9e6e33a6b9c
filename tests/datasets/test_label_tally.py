"""A dataset with a label-set contract shows each label with its approved and pending examples
(those with none too), the thin ones flagged and the answers that are no label counted, on its
page and in its API."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from datasets.models import Dataset, Example, ExampleStatus
from datasets.selectors import label_tally
from ftportal.models import Project
from tests.api.builders import api, token_client
from tests.pages.builders import XSS, XSS_ESCAPED

pytestmark = pytest.mark.django_db

LONG = "bug report: crash on start-up after the 4.2 update on Android tablets " * 2
LABELS = ["billing", LONG.strip(), XSS, "compte bloqué", "never used"]


def _examples(dataset: Dataset, answer: str, status: str, count: int) -> None:
    Example.objects.bulk_create(
        Example(
            dataset=dataset,
            status=status,
            messages=[
                {"role": "user", "content": f"message {n}"},
                {"role": "assistant", "content": f"  {answer}\n"},
            ],
        )
        for n in range(count)
    )


@pytest.fixture
def labelled(dataset: Dataset) -> Dataset:
    dataset.answer_contract = {"kind": "label_set", "labels": LABELS}
    dataset.save(update_fields=["answer_contract"])
    _examples(dataset, "billing", ExampleStatus.APPROVED, 12)
    _examples(dataset, "billing", ExampleStatus.PENDING, 2)
    _examples(dataset, LONG.strip(), ExampleStatus.APPROVED, 3)
    _examples(dataset, XSS, ExampleStatus.PENDING, 4)
    _examples(dataset, "compte bloqué", ExampleStatus.APPROVED, 10)
    _examples(dataset, "Billing", ExampleStatus.APPROVED, 1)  # not a label: case counts
    _examples(dataset, "billing", ExampleStatus.REJECTED, 5)  # rejected: not counted
    return dataset


def test_every_label_is_counted_fewest_approved_first(labelled: Dataset) -> None:
    tally = label_tally(labelled, threshold=10)

    assert tally is not None
    # Ties in order of the label: "<" sorts before "n".
    assert [(c.label, c.approved, c.pending) for c in tally.labels] == [
        (XSS, 0, 4),
        ("never used", 0, 0),
        (LONG.strip(), 3, 0),
        ("compte bloqué", 10, 0),
        ("billing", 12, 2),
    ]
    assert tally.thin == [XSS, "never used", LONG.strip()]
    assert (tally.outside_approved, tally.outside_pending) == (1, 0)


def test_no_label_set_no_tally(dataset: Dataset) -> None:
    _examples(dataset, "billing", ExampleStatus.APPROVED, 3)

    assert label_tally(dataset, threshold=10) is None
    dataset.answer_contract = {"kind": "regex", "pattern": "[a-z]+"}
    assert label_tally(dataset, threshold=10) is None


def test_the_dataset_page_lists_the_labels_escaped_with_the_thin_ones_flagged(
    client: Client, project: Project, lead: User, labelled: Dataset
) -> None:
    client.force_login(lead)

    page = client.get(reverse("dataset_detail", args=[project.pk, labelled.pk])).content.decode()

    assert "5 labels" in page
    assert "3 with fewer than 10 approved" in page
    assert "1 approved answers are none of them" in page
    assert XSS not in page and XSS_ESCAPED in page
    assert LONG.strip() in page
    assert page.count('class="warning"><td><code>') == 3


def test_the_dataset_api_returns_the_tally(
    project: Project, lead: User, labelled: Dataset, dataset: Dataset
) -> None:
    client = token_client(lead)

    response = client.get(api(project, f"datasets/{labelled.pk}/"))

    assert response.status_code == 200, response.content
    tally = response.json()["label_tally"]
    assert tally["labels"][1] == {"label": "never used", "approved": 0, "pending": 0}
    assert tally["thin"] == [XSS, "never used", LONG.strip()]
    assert (tally["outside_approved"], tally["threshold"]) == (1, 10)
