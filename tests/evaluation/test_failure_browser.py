"""The failure browser through Django's test client: filters, diffs, who may tag and send,
escaping, and failures sent back to the review queue."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel
from datasets.models import DatasetVersion, DatasetVersionExample, Example, ExampleStatus
from evaluation.models import Candidate, EvalResult, EvalRun, EvalStatus
from ftportal.models import Project
from ftportal.roles import Role
from tests.factories import frozen_version
from tests.pages.builders import HTMX, XSS, XSS_ESCAPED, assert_escaped, page_text

WRONG = json.dumps({"category": "bug", "priority": "high"})

# Per item position: (A's exact match, A's error, B's exact match). Position 4 scored as right
# but its request failed, so it reads as wrong.
PLAN = {
    0: (0.0, "", 1.0),  # A wrong, B right
    1: (1.0, "", 0.0),  # A right, B wrong
    2: (0.0, "", 0.0),  # both wrong
    3: (1.0, "", 1.0),  # both right
    4: (1.0, "HTTP 429: rate limited", 1.0),  # A's request failed; B right
}


@dataclass
class Failures:
    project: Project
    version: DatasetVersion
    run: EvalRun
    a: Candidate
    b: Candidate
    results: dict[int, EvalResult]  # A's, by item position

    @property
    def url(self) -> str:
        return reverse("eval_failures", args=[self.project.pk, self.run.pk])

    def tag_url(self, position: int) -> str:
        return reverse(
            "eval_result_tag", args=[self.project.pk, self.run.pk, self.results[position].pk]
        )

    @property
    def send_url(self) -> str:
        return reverse("eval_send_to_review", args=[self.project.pk, self.run.pk])


@pytest.fixture
def lead(make_member: Callable[..., User]) -> User:
    return make_member(Role.ML_LEAD)


def _answer(item: DatasetVersionExample, right: float) -> str:
    return item.messages[-1]["content"] if right else WRONG


def build_run(project: Project, lead: User, base_model: BaseModel, version: DatasetVersion):
    run = EvalRun.objects.create(
        project=project,
        dataset_version=version,
        status=EvalStatus.SUCCEEDED,
        created_by=lead,
        report={"metrics": ["exact_match", "token_f1"], "primary_metric": "exact_match"},
    )
    a = Candidate.objects.create(
        run=run, position=0, label="base", kind="base", base_model=base_model
    )
    b = Candidate.objects.create(
        run=run, position=1, label="tuned", kind="base", base_model=base_model
    )
    return run, a, b


@pytest.fixture
def failures(project: Project, lead: User, base_model: BaseModel) -> Failures:
    version = frozen_version(project, lead, count=len(PLAN))
    run, a, b = build_run(project, lead, base_model, version)
    results = {}
    for item in version.items.filter(position__in=PLAN):
        a_score, a_error, b_score = PLAN[item.position]
        results[item.position] = EvalResult.objects.create(
            candidate=a,
            item=item,
            output=_answer(item, a_score),
            error=a_error,
            scores={"exact_match": a_score, "token_f1": 0.5},
        )
        EvalResult.objects.create(
            candidate=b, item=item, output=_answer(item, b_score), scores={"exact_match": b_score}
        )
    return Failures(project, version, run, a, b, results)


def positions(response) -> list[int]:
    return [int(p) for p in re.findall(r'data-position="(\d+)"', response.content.decode())]


def db_state() -> dict[str, object]:
    return {
        "examples": sorted(Example.objects.values_list("id", "status", "messages")),
        "results": sorted(EvalResult.objects.values_list("id", "tags", "sent_to_review")),
    }


# --- filtering -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("all", [0, 1, 2, 3, 4]),
        ("a_wrong_b_right", [0, 4]),
        ("a_right_b_wrong", [1]),
        ("both_wrong", [2]),
        ("wrong", [0, 2, 4]),
        ("right", [1, 3]),
        ("failed", [4]),
    ],
)
def test_the_outcome_filter_keeps_the_matching_items_and_counts_them(
    client: Client, failures: Failures, lead: User, outcome: str, expected: list[int]
) -> None:
    client.force_login(lead)

    response = client.get(failures.url, {"outcome": outcome})

    assert response.status_code == 200
    assert positions(response) == expected
    assert f"{len(expected)} of 5 items" in page_text(response)


def test_swapping_a_and_b_and_filtering_by_tag(
    client: Client, failures: Failures, lead: User
) -> None:
    failures.results[2].tags = ["hallucinated field"]
    failures.results[2].save()
    client.force_login(lead)

    swapped = client.get(
        failures.url,
        {"a": str(failures.b.pk), "b": str(failures.a.pk), "outcome": "a_wrong_b_right"},
    )
    tagged = client.get(failures.url, {"tag": "Hallucinated field"})

    assert positions(swapped) == [1]
    assert positions(tagged) == [2]
    # The filter form shows what was chosen, so the URL and the form agree.
    html = swapped.content.decode()
    assert re.search(rf'name="a".*?<option value="{failures.b.pk}" selected>tuned', html, re.S)
    assert '<option value="a_wrong_b_right" selected>A wrong, B right</option>' in html


def test_a_lower_threshold_on_another_metric_changes_what_counts_as_right(
    client: Client, failures: Failures, lead: User
) -> None:
    client.force_login(lead)

    strict = client.get(failures.url, {"outcome": "wrong"})
    lenient = client.get(
        failures.url, {"metric": "token_f1", "threshold": "0.5", "outcome": "wrong"}
    )

    # Every answer of A has token F1 0.5; only the failed request still counts as wrong.
    assert positions(strict) == [0, 2, 4]
    assert positions(lenient) == [4]
    assert '<option value="token_f1" selected>token F1</option>' in lenient.content.decode()


def test_answers_with_confidences_can_be_read_least_or_most_confident_first(
    client: Client, failures: Failures, lead: User
) -> None:
    confidences = {0: 0.9, 1: 0.2, 2: 0.55, 3: None, 4: 0.95}
    for position, confidence in confidences.items():
        failures.results[position].confidence = confidence
        failures.results[position].save(update_fields=["confidence"])
    client.force_login(lead)

    least = client.get(failures.url, {"order": "least_confident"})
    most = client.get(failures.url, {"order": "most_confident", "outcome": "wrong"})
    bad = client.get(failures.url, {"order": "random"})

    # An answer without a confidence comes last either way.
    assert positions(least) == [1, 2, 0, 4, 3]
    assert positions(most) == [4, 0, 2]  # A is wrong on 0, 2 and 4 (a failed request)
    assert "confidence 0.55" in page_text(least)
    assert bad.status_code == 400
    assert "order: one of item, least_confident, most_confident" in page_text(bad)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"outcome": "nonsense"}, "outcome: one of"),
        ({"metric": "vibes"}, "metric: one of"),
        ({"threshold": "2"}, "threshold: a number between 0 and 1"),
        ({"threshold": "high"}, "threshold: a number between 0 and 1"),
        ({"a": "abc"}, "a: a candidate id"),
        ({"b": "999999"}, "b: no candidate 999999 in this run"),
    ],
)
def test_a_bad_filter_parameter_is_a_400_page_naming_it(
    client: Client, failures: Failures, lead: User, params: dict[str, str], named: str
) -> None:
    client.force_login(lead)

    response = client.get(failures.url, params)

    assert response.status_code == 400
    assert named in page_text(response)


def test_rows_are_paginated_by_fifty_keeping_the_filter(
    client: Client, failures: Failures, lead: User
) -> None:
    items = DatasetVersionExample.objects.bulk_create(
        DatasetVersionExample(
            version=failures.version,
            position=100 + n,
            split="validation",
            messages=[
                {"role": "user", "content": f"Ticket {n}"},
                {"role": "assistant", "content": "{}"},
            ],
        )
        for n in range(50)
    )
    EvalResult.objects.bulk_create(
        EvalResult(candidate=failures.a, item=item, output="?", scores={"exact_match": 0.0})
        for item in items
    )
    client.force_login(lead)

    first = client.get(failures.url, {"outcome": "wrong"})
    second = client.get(failures.url, {"outcome": "wrong", "page": "2"})

    assert len(positions(first)) == 50
    assert "53 of 55 items" in page_text(first)
    assert "?outcome=wrong&amp;page=2" in first.content.decode()
    assert positions(second) == [147, 148, 149]


# --- what a row shows ----------------------------------------------------------------------


def test_a_row_shows_the_word_diff_score_error_and_b_beside_it(
    client: Client, failures: Failures, lead: User
) -> None:
    client.force_login(lead)

    html = client.get(failures.url, {"outcome": "a_wrong_b_right"}).content.decode()

    # Missing words of the expected answer are deleted, the output's extra words inserted.
    assert "<del>&quot;billing&quot;,</del><ins>&quot;bug&quot;,</ins>" in html
    assert "HTTP 429: rate limited" in html
    assert "exact match: 0.0 %" in html and "exact match: 100.0 %" in html
    assert "B: tuned" in html and "A: base" in html
    assert "I was charged twice this month" in html  # the prompt's user message


def test_the_run_page_links_to_the_browser_and_each_comparison_to_its_failures(
    client: Client, failures: Failures, lead: User
) -> None:
    run = failures.run
    run.report["comparisons"] = [
        {
            "a": str(failures.a.pk),
            "b": str(failures.b.pk),
            "metric": "exact_match",
            "difference": -0.2,
            "ci_low": -0.4,
            "ci_high": 0.0,
            "wins": 1,
            "ties": 3,
            "losses": 1,
            "test": "sign",
            "test_p": 1.0,
            "significant": False,
        }
    ]
    run.save()
    client.force_login(lead)

    html = client.get(reverse("eval_detail", args=[failures.project.pk, run.pk])).content.decode()

    assert f'href="{failures.url}" id="browse-failures"' in html
    link = (
        f"{failures.url}?a={failures.a.pk}&amp;b={failures.b.pk}"
        "&amp;outcome=a_wrong_b_right&amp;metric=exact_match"
    )
    assert link in html
    followed = client.get(
        failures.url,
        {
            "a": str(failures.a.pk),
            "b": str(failures.b.pk),
            "outcome": "a_wrong_b_right",
            "metric": "exact_match",
        },
    )
    assert positions(followed) == [0, 4]


# --- who may do what -----------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_every_member_can_browse_and_only_evaluators_see_the_controls(
    client: Client, failures: Failures, make_member, role: Role
) -> None:
    client.force_login(make_member(role))

    response = client.get(failures.url)

    assert response.status_code == 200
    html = response.content.decode()
    writer = role in (Role.ML_LEAD, Role.ADMIN)
    assert ('id="send-form"' in html) is writer
    assert ('class="add-tag"' in html) is writer


def test_a_user_outside_the_project_gets_404(client: Client, failures: Failures) -> None:
    client.force_login(User.objects.create_user(username="stranger", password="pw"))

    response = client.get(failures.url)

    assert response.status_code == 404
    assert "Ticket triage" not in page_text(response)


def _posts(failures: Failures) -> dict[str, tuple[str, dict[str, object]]]:
    return {
        "tag": (failures.tag_url(0), {"tag": "wrong label"}),
        "send": (failures.send_url, {"results": [failures.results[0].pk]}),
    }


@pytest.mark.parametrize("post", ["tag", "send"])
@pytest.mark.parametrize("role", [Role.ML_LEAD, Role.ADMIN])
def test_leads_and_admins_may_tag_and_send(
    client: Client, failures: Failures, make_member, role: Role, post: str
) -> None:
    client.force_login(make_member(role))
    url, data = _posts(failures)[post]
    before = db_state()

    response = client.post(url, data)

    assert response.status_code == 302
    assert db_state() != before


@pytest.mark.parametrize("post", ["tag", "send"])
@pytest.mark.parametrize("role", [Role.REVIEWER, Role.MANAGER])
def test_reviewers_and_managers_get_403_and_nothing_changes(
    client: Client, failures: Failures, make_member, role: Role, post: str
) -> None:
    client.force_login(make_member(role))
    url, data = _posts(failures)[post]
    before = db_state()

    response = client.post(url, data)
    fragment = client.post(url, data, headers=HTMX)

    assert response.status_code == 403 and fragment.status_code == 403
    assert f"Your role '{role.value}' in project 'Ticket triage'" in page_text(response)
    assert "does not allow you to run evaluations" in page_text(fragment)
    assert db_state() == before


@pytest.mark.parametrize("post", ["tag", "send"])
def test_a_user_outside_the_project_gets_404_for_the_posts(
    client: Client, failures: Failures, post: str
) -> None:
    client.force_login(User.objects.create_user(username="stranger", password="pw"))
    url, data = _posts(failures)[post]
    before = db_state()

    response = client.post(url, data)

    assert response.status_code == 404
    assert db_state() == before


def test_a_result_of_another_run_cannot_be_tagged_or_sent_through_this_one(
    client: Client, failures: Failures, lead: User, base_model: BaseModel
) -> None:
    other_run, other_a, _ = build_run(failures.project, lead, base_model, failures.version)
    stray = EvalResult.objects.create(
        candidate=other_a, item=failures.results[0].item, output="x", scores={}
    )
    client.force_login(lead)
    before = db_state()

    tagged = client.post(
        reverse("eval_result_tag", args=[failures.project.pk, failures.run.pk, stray.pk]),
        {"tag": "x"},
    )
    sent = client.post(failures.send_url, {"results": [stray.pk]})

    assert tagged.status_code == 404
    assert sent.status_code == 400
    assert db_state() == before
    assert other_run.pk != failures.run.pk


# --- tagging -------------------------------------------------------------------------------


def test_tags_are_added_and_removed_through_htmx_fragments(
    client: Client, failures: Failures, lead: User
) -> None:
    client.force_login(lead)
    result = failures.results[0]
    url = failures.tag_url(0) + "?outcome=wrong"

    added = client.post(url, {"tag": "  Wrong   Label "}, headers=HTMX)
    result.refresh_from_db()

    assert added.status_code == 200
    fragment = added.content.decode()
    assert "<html" not in fragment
    assert fragment.lstrip().startswith(f'<div class="result-tags" id="tags-{result.pk}">')
    assert 'data-tag="wrong label"' in fragment
    assert f'hx-post="{failures.tag_url(0)}?outcome=wrong"' in fragment  # the filter is kept
    assert result.tags == ["wrong label"]

    removed = client.post(url, {"remove": "wrong label"}, headers=HTMX)
    result.refresh_from_db()

    assert removed.status_code == 200
    assert 'data-tag="wrong label"' not in removed.content.decode()
    assert result.tags == []


@pytest.mark.parametrize("tag", ["   ", "x" * 51])
def test_an_empty_or_too_long_tag_is_a_400_fragment_with_the_reason(
    client: Client, failures: Failures, lead: User, tag: str
) -> None:
    client.force_login(lead)

    response = client.post(failures.tag_url(0), {"tag": tag}, headers=HTMX)

    assert response.status_code == 400
    fragment = page_text(response)
    assert "<html" not in fragment
    assert "A tag is 1 to 50 characters." in fragment
    assert 'class="add-tag"' in fragment  # the form stays to try again
    failures.results[0].refresh_from_db()
    assert failures.results[0].tags == []


def test_tagging_without_htmx_redirects_back_to_the_filtered_page(
    client: Client, failures: Failures, lead: User
) -> None:
    client.force_login(lead)

    response = client.post(failures.tag_url(0) + "?outcome=wrong&page=1&evil=1", {"tag": "typo"})

    assert response.status_code == 302
    assert response["Location"] == f"{failures.url}?outcome=wrong&page=1"
    assert 'data-tag="typo"' in client.get(response["Location"]).content.decode()


# --- escaping ------------------------------------------------------------------------------


def test_hostile_prompt_reference_output_and_tag_are_escaped(
    client: Client, failures: Failures, lead: User
) -> None:
    item = failures.results[0].item
    item.messages = [
        {"role": "user", "content": f"Help {XSS}"},
        {"role": "assistant", "content": f"{XSS} done"},
    ]
    item.save()
    EvalResult.objects.filter(pk=failures.results[0].pk).update(
        output=f"{XSS}!", error=XSS, tags=[XSS]
    )
    EvalResult.objects.filter(item=item, candidate=failures.b).update(output=f"{XSS} done")
    client.force_login(lead)

    response = client.get(failures.url, {"outcome": "a_wrong_b_right", "tag": XSS})

    assert_escaped(response)
    html = response.content.decode()
    # Prompt, reference, A's diff (twice: the reference deleted, the output inserted), A's
    # error, B's diff, and the tag as text and in the remove button.
    assert html.count(XSS_ESCAPED) >= 7
    fragment = client.post(failures.tag_url(0), {"tag": "ok"}, headers=HTMX)
    assert_escaped(fragment)


# --- send to review ------------------------------------------------------------------------


def test_chosen_failures_become_pending_examples_linked_to_the_run_and_not_sent_twice(
    client: Client, failures: Failures, lead: User
) -> None:
    client.force_login(lead)
    chosen = [failures.results[0].pk, failures.results[4].pk]
    dataset = failures.version.dataset
    url = failures.send_url + "?outcome=a_wrong_b_right"

    response = client.post(url, {"results": chosen})

    assert response.status_code == 302
    assert response["Location"] == f"{failures.url}?outcome=a_wrong_b_right"
    created = list(Example.objects.filter(metadata__eval_run=failures.run.pk).order_by("pk"))
    assert [e.status for e in created] == [ExampleStatus.PENDING] * 2
    assert [e.dataset_id for e in created] == [dataset.pk] * 2
    assert sorted(e.metadata["item_position"] for e in created) == [0, 4]
    assert {e.messages[-1]["content"] for e in created} == {WRONG, failures.results[4].output}
    page = client.get(response["Location"])
    assert f"2 examples sent to the review queue of {dataset.name}." in page_text(page)
    review = reverse("review_queue", args=[failures.project.pk, dataset.pk])
    for example in created:
        assert f'href="{review}?example={example.pk}">sent</a>' in page.content.decode()
    assert page.content.decode().count(" disabled>") == 2  # sent rows cannot be ticked again

    again = client.post(url, {"results": chosen}, follow=True)

    assert Example.objects.filter(metadata__eval_run=failures.run.pk).count() == 2
    assert "0 examples sent to the review queue" in page_text(again)
    assert "(2 already sent, not sent again)" in page_text(again)


def test_a_manager_sees_sent_without_a_link_to_the_review_queue(
    client: Client, failures: Failures, lead: User, make_member
) -> None:
    client.force_login(lead)
    client.post(failures.send_url, {"results": [failures.results[0].pk]})
    client.force_login(make_member(Role.MANAGER))

    html = client.get(failures.url).content.decode()

    assert '<span class="sent">sent</span>' in html
    assert "?example=" not in html


def test_sending_nothing_or_junk_is_explained(
    client: Client, failures: Failures, lead: User
) -> None:
    client.force_login(lead)
    before = db_state()

    nothing = client.post(failures.send_url, {}, follow=True)
    junk = client.post(failures.send_url, {"results": ["1; drop"]})

    assert "Tick at least one answer" in page_text(nothing)
    assert junk.status_code == 400
    assert db_state() == before
