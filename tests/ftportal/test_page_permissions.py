"""Who may do what through the pages, for every app's pages and actions: a role that forbids an
action gets a 403 page naming the role, and an outsider a 404, and neither changes anything; a
manager reads every page and sees no button for what the role cannot take; an anonymous visitor
is sent to the login page."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from datasets.models import DatasetVersion, Example, ImportBatch, ReviewDecision
from evaluation.models import EvalRun
from ftportal.roles import Action, Role
from registry.models import Alias, AliasChange, ModelVersion
from tests.pages.builders import World, jsonl_line, page_text, upload
from tests.pages.fixtures import page_world_fixture  # noqa: F401
from training.models import TrainingJob, TrainingSearch

# Each page action as (method, url, form data), built for a given world.
PageAction = Callable[[World], tuple[str, str, dict[str, object]]]
PAGE_ACTIONS: dict[str, tuple[Action, PageAction]] = {
    "import": (
        Action.IMPORT_EXAMPLES,
        lambda w: (
            "post",
            reverse("dataset_import", args=[w.project.pk, w.dataset.pk]),
            {"file": upload("more.jsonl", jsonl_line("Refund please"))},
        ),
    ),
    # Every member reads the queue (managers read only); kept here for the outsiders' 404.
    "open the review queue": (
        Action.VIEW,
        lambda w: ("get", reverse("review_queue", args=[w.project.pk, w.dataset.pk]), {}),
    ),
    "review": (
        Action.REVIEW,
        lambda w: (
            "post",
            reverse("review_decide", args=[w.project.pk, w.pending.pk]),
            {"action": "approve", "revision": w.pending.revision},
        ),
    ),
    "freeze": (
        Action.FREEZE,
        lambda w: (
            "post",
            reverse("dataset_freeze", args=[w.project.pk, w.dataset.pk]),
            {"validation_fraction": "0.15", "seed": "42"},
        ),
    ),
    "train": (
        Action.TRAIN,
        lambda w: (
            "post",
            reverse("job_create", args=[w.project.pk, w.version.pk]),
            {"base_model": w.base_model.key, "epochs": "1", "max_steps": "3"},
        ),
    ),
    "search": (
        Action.TRAIN,
        lambda w: (
            "post",
            reverse("search_create", args=[w.project.pk, w.version.pk]),
            {"base_model": w.base_model.key, "budget_minutes": "600", "trial_count": "2"},
        ),
    ),
    "cancel": (
        Action.TRAIN,
        lambda w: ("post", reverse("job_cancel", args=[w.project.pk, w.running_job.pk]), {}),
    ),
    "open the launch form": (
        Action.TRAIN,
        lambda w: ("get", reverse("job_launch", args=[w.project.pk, w.version.pk]), {}),
    ),
    "estimate": (
        Action.TRAIN,
        lambda w: ("get", reverse("job_estimate", args=[w.project.pk, w.version.pk]), {}),
    ),
    "register a checkpoint": (
        Action.TRAIN,
        lambda w: (
            "post",
            reverse(
                "checkpoint_register",
                args=[w.project.pk, w.running_job.pk, w.running_job.checkpoints.get().pk],
            ),
            {},
        ),
    ),
    "evaluate": (
        Action.EVALUATE,
        lambda w: ("post", reverse("eval_create", args=[w.project.pk, w.v2.pk]), {}),
    ),
    "cancel an evaluation": (
        Action.EVALUATE,
        lambda w: ("post", reverse("eval_cancel", args=[w.project.pk, w.queued_eval.pk]), {}),
    ),
    "open the promotion page": (
        Action.PROMOTE,
        lambda w: ("get", reverse("version_promote", args=[w.project.pk, w.v1.pk]), {}),
    ),
    "promote": (
        Action.PROMOTE,
        lambda w: (
            "post",
            reverse("version_promote", args=[w.project.pk, w.v1.pk]),
            {"reason": "better", "expected_current_version": "2"},
        ),
    ),
    "rollback": (
        Action.PROMOTE,
        lambda w: (
            "post",
            reverse("model_rollback", args=[w.project.pk, w.registered.pk]),
            {"reason": "drift", "expected_current_version": "2", "target_version": "1"},
        ),
    ),
}
FORBIDDEN = {
    Role.REVIEWER: [
        "freeze",
        "train",
        "search",
        "cancel",
        "open the launch form",
        "estimate",
        "register a checkpoint",
        "evaluate",
        "cancel an evaluation",
        "open the promotion page",
        "promote",
        "rollback",
    ],
    Role.MANAGER: [
        "import",
        "review",
        "freeze",
        "train",
        "search",
        "cancel",
        "open the launch form",
        "estimate",
        "register a checkpoint",
        "evaluate",
        "cancel an evaluation",
        "open the promotion page",
        "promote",
        "rollback",
    ],
}
PAGES: dict[str, Callable[[World], str]] = {
    "project": lambda w: reverse("project_detail", args=[w.project.pk]),
    "dataset": lambda w: reverse("dataset_detail", args=[w.project.pk, w.dataset.pk]),
    "version": lambda w: reverse("version_detail", args=[w.project.pk, w.version.pk]),
    "export": lambda w: reverse("version_export", args=[w.project.pk, w.version.pk]),
    "job": lambda w: reverse("job_detail", args=[w.project.pk, w.running_job.pk]),
    "registry": lambda w: reverse("model_list", args=[w.project.pk]),
    "model version": lambda w: reverse("model_version_detail", args=[w.project.pk, w.v1.pk]),
    "catalog": lambda w: reverse("base_model_catalog", args=[w.project.pk]),
    "review queue": lambda w: reverse("review_queue", args=[w.project.pk, w.dataset.pk]),
}


def db_state() -> dict[str, object]:
    """Everything a page action could change, to show that a refused one changed nothing."""
    return {
        "examples": sorted(Example.objects.values_list("id", "status", "messages")),
        "imports": ImportBatch.objects.count(),
        "decisions": ReviewDecision.objects.count(),
        "versions": DatasetVersion.objects.count(),
        "jobs": sorted(TrainingJob.objects.values_list("id", "status", "cancel_requested")),
        "searches": TrainingSearch.objects.count(),
        "evals": sorted(EvalRun.objects.values_list("id", "status")),
        "models": ModelVersion.objects.count(),
        "aliases": sorted(Alias.objects.values_list("registered_model", "name", "model_version")),
        "alias_changes": AliasChange.objects.count(),
    }


def act(client: Client, world: World, name: str):
    method, url, data = PAGE_ACTIONS[name][1](world)
    return getattr(client, method)(url, data)


FORBIDDEN_CASES = [(role, name) for role, names in FORBIDDEN.items() for name in names]


@pytest.mark.parametrize(
    ("role", "action_name"), FORBIDDEN_CASES, ids=[f"{r.value}-{a}" for r, a in FORBIDDEN_CASES]
)
def test_a_member_whose_role_forbids_an_action_gets_a_403_page_naming_the_role(
    client: Client, world: World, make_member, role: Role, action_name: str
) -> None:
    client.force_login(make_member(role))
    before = db_state()

    response = act(client, world, action_name)

    assert response.status_code == 403
    text = page_text(response)
    action = PAGE_ACTIONS[action_name][0]
    assert f"Your role '{role.value}' in project 'Ticket triage'" in text
    assert f"does not allow you to {action.label}" in text
    assert db_state() == before


@pytest.mark.parametrize("action_name", list(PAGE_ACTIONS))
def test_a_user_outside_the_project_gets_404_for_every_action_and_nothing_changes(
    client: Client, world: World, action_name: str
) -> None:
    stranger = User.objects.create_user(username="stranger", password="pw")
    client.force_login(stranger)
    before = db_state()

    response = act(client, world, action_name)

    assert response.status_code == 404
    assert "Ticket triage" not in page_text(response)  # the project's name does not leak
    assert db_state() == before


@pytest.mark.parametrize("page", list(PAGES))
def test_a_user_outside_the_project_cannot_see_its_pages(
    client: Client, world: World, page: str
) -> None:
    client.force_login(User.objects.create_user(username="stranger", password="pw"))
    response = client.get(PAGES[page](world))
    assert response.status_code == 404
    assert "Ticket triage" not in page_text(response)


@pytest.mark.parametrize("page", list(PAGES))
def test_a_manager_can_read_every_page(
    client: Client, world: World, make_member, page: str
) -> None:
    client.force_login(make_member(Role.MANAGER))
    assert client.get(PAGES[page](world)).status_code == 200


def test_a_manager_sees_no_buttons_for_actions_the_role_cannot_take(
    client: Client, world: World, make_member
) -> None:
    client.force_login(make_member(Role.MANAGER))
    dataset_page = client.get(PAGES["dataset"](world)).content.decode()
    version_page = client.get(PAGES["version"](world)).content.decode()
    job_page = client.get(PAGES["job"](world)).content.decode()
    registry_page = client.get(PAGES["registry"](world)).content.decode()

    assert 'name="file"' not in dataset_page
    assert "Freeze version" not in dataset_page
    assert "Review pending examples" not in dataset_page
    assert 'id="start-training"' not in version_page
    assert 'id="cancel-job"' not in job_page
    assert "Promote to production" not in registry_page
    assert "Roll back to" not in registry_page


def test_an_anonymous_visitor_is_sent_to_the_login_page(client: Client, world: World) -> None:
    response = client.get(PAGES["dataset"](world))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
