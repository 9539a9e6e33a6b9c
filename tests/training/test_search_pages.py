"""A search's pages through Django's test client: the launch form's second button starts one,
its page lists every planned trial, charts the trials' validation curves, marks the best and
polls until it ends; a trial's job page links back to it and charts its label accuracy."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from ftportal.roles import Role
from tests.charts import page_charts, series_points
from tests.pages.builders import HTMX, XSS, XSS_ESCAPED, World
from tests.pages.fixtures import page_world_fixture  # noqa: F401
from training.models import JobStatus, SearchStatus, TrainingMetric, TrainingSearch
from training.searches import training_search_create


def started_search(world: World, lead: User, *, trials: int = 3) -> TrainingSearch:
    return training_search_create(
        project=world.project,
        dataset_version=world.version,
        base_model=world.base_model,
        user=lead,
        budget_minutes=600,
        trial_count=trials,
        model_name="tickets-ft",
    )


def test_the_launch_form_offers_a_search_for_a_local_model(
    client: Client, world: World, lead: User
) -> None:
    client.force_login(lead)
    page = client.get(reverse("job_launch", args=[world.project.pk, world.version.pk]))

    html = page.content.decode()
    assert 'id="search-settings"' in html
    assert 'name="trial_count"' in html and 'name="budget_minutes"' in html
    search_url = reverse("search_create", args=[world.project.pk, world.version.pk])
    assert f'formaction="{search_url}"' in html


def test_starting_a_search_from_the_form_opens_its_page_with_every_trial(
    client: Client, world: World, lead: User
) -> None:
    client.force_login(lead)
    response = client.post(
        reverse("search_create", args=[world.project.pk, world.version.pk]),
        {
            "base_model": world.base_model.key,
            "trial_count": "3",
            "budget_minutes": "90",
            "epochs": "2",
            "model_name": "tickets-ft",
        },
    )

    search = TrainingSearch.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("search_detail", args=[world.project.pk, search.pk])
    assert search.budget_minutes == 90
    assert search.hyperparameters["epochs"] == "2"
    (first,) = search.trials.all()
    assert first.hyperparameters["epochs"] == 2
    page = client.get(response["Location"]).content.decode()
    assert 'data-trial="1"' in page and 'data-trial="3"' in page
    assert page.count("not started") == 2
    assert reverse("job_detail", args=[world.project.pk, first.pk]) in page
    assert "0.0 of 90 minutes" in page
    assert 'hx-trigger="every 3s"' in page
    assert 'id="cancel-search"' in page
    # The version's page and the project's overview lead to the search and its trial.
    version_page = client.get(
        reverse("version_detail", args=[world.project.pk, world.version.pk])
    ).content.decode()
    assert 'id="version-searches"' in version_page
    assert response["Location"] in version_page
    overview = client.get(reverse("project_detail", args=[world.project.pk])).content.decode()
    assert response["Location"] in overview


def test_a_search_form_with_a_bad_budget_says_which_field(
    client: Client, world: World, lead: User
) -> None:
    client.force_login(lead)
    response = client.post(
        reverse("search_create", args=[world.project.pk, world.version.pk]),
        {"base_model": world.base_model.key, "trial_count": "2", "budget_minutes": "an hour"},
    )

    assert response.status_code == 400
    assert "budget_minutes: expected a whole number" in response.content.decode()
    assert not TrainingSearch.objects.exists()


def test_a_finished_search_marks_the_best_charts_each_trial_and_stops_polling(
    client: Client, world: World, lead: User, make_member: Callable[[Role], User]
) -> None:
    search = started_search(world, lead, trials=2)
    first = search.trials.get()
    for step, accuracy in ((2, 0.5), (4, 0.75)):
        TrainingMetric.objects.create(
            job=first, step=step, epoch=1.0, val_loss=1.0, val_accuracy=accuracy
        )
    first.status = JobStatus.SUCCEEDED
    first.val_accuracy = 0.75
    first.best_step = 4
    first.save()
    search.status = SearchStatus.SUCCEEDED
    search.best_job = first
    search.outcome = "Stopped before trial 2: 0.5 minutes of the budget were left."
    search.model_name = XSS
    search.save()
    client.force_login(make_member(Role.MANAGER))

    fragment = client.get(
        reverse("search_detail", args=[world.project.pk, search.pk]), headers=HTMX
    ).content.decode()

    assert "<html" not in fragment
    assert "hx-trigger" not in fragment
    assert 'data-trial="1" class="best"' in fragment
    assert "75.0 %" in fragment
    assert "Stopped before trial 2" in fragment
    assert 'id="cancel-search"' not in fragment  # finished, and a manager cannot train
    chart = page_charts(fragment)["search-chart-data"]
    assert series_points(chart) == {"Trial 1": [[2, 0.5], [4, 0.75]]}
    page = client.get(reverse("search_detail", args=[world.project.pk, search.pk]))
    assert XSS not in page.content.decode() and XSS_ESCAPED in page.content.decode()


def test_cancelling_from_the_page_cancels_the_queued_trial(
    client: Client, world: World, lead: User
) -> None:
    search = started_search(world, lead)
    client.force_login(lead)

    response = client.post(reverse("search_cancel", args=[world.project.pk, search.pk]))

    assert response.status_code == 302
    search.refresh_from_db()
    assert search.cancel_requested
    assert search.trials.get().status == JobStatus.CANCELLED


def test_outsiders_get_404_and_managers_cannot_cancel(
    client: Client, world: World, lead: User, make_member: Callable[[Role], User]
) -> None:
    search = started_search(world, lead)
    client.force_login(User.objects.create_user(username="stranger", password="pw"))
    url = reverse("search_detail", args=[world.project.pk, search.pk])
    assert client.get(url).status_code == 404

    client.force_login(make_member(Role.MANAGER))
    assert client.get(url).status_code == 200
    response = client.post(reverse("search_cancel", args=[world.project.pk, search.pk]))
    assert response.status_code == 403
    search.refresh_from_db()
    assert not search.cancel_requested


def test_a_trial_page_links_its_search_and_charts_its_label_accuracy(
    client: Client, world: World, lead: User
) -> None:
    search = started_search(world, lead)
    trial = search.trials.get()
    TrainingMetric.objects.create(job=trial, step=2, epoch=0.5, val_loss=1.2, val_accuracy=0.25)
    client.force_login(lead)

    page = client.get(reverse("job_detail", args=[world.project.pk, trial.pk])).content.decode()

    assert reverse("search_detail", args=[world.project.pk, search.pk]) in page
    assert 'id="latest-val-accuracy">25.0 %' in page
    chart = page_charts(page)["accuracy-chart-data"]
    assert series_points(chart) == {"Validation label accuracy": [[2, 0.25]]}
    other = client.get(reverse("job_detail", args=[world.project.pk, world.running_job.pk]))
    assert "accuracy-chart-data" not in other.content.decode()
