"""The daily lifecycle check (``catalog.lifecycle``): each OpenAI endpoint's model list (the
fake API's GET /v1/models, read through the real SDK with the endpoint's own key) sets the
shutdown date of the base models it lists; a date the provider announces wins, one it does not
announce is left as it was (an admin's manual entry included); a list that cannot be read
changes nothing and is logged by endpoint name, never with the key. The admin's manual entries
record who made them."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.forms.models import model_to_dict
from django.test import Client, RequestFactory
from django.urls import reverse

from catalog.admin import BaseModelAdmin
from catalog.lifecycle import (
    LifecycleEventKind,
    base_model_lifecycle_events,
    endpoint_lifecycle_refresh,
    lifecycle_refresh,
    source_after,
)
from catalog.models import BaseModel, Endpoint, EndpointKind, Provider
from catalog.tasks import lifecycle_refresh_daily
from fakes.openai_server import FakeOpenAIServer, fake_openai_fixture  # noqa: F401
from tests.factories import fake_endpoint

pytestmark = pytest.mark.django_db

KEY_ENV = "FTPORTAL_TEST_ENDPOINT_KEY"
SECRET = "sk-lifecycle-secret-4242"
NOW = dt.datetime(2026, 11, 1, 6, 0, tzinfo=dt.UTC)
RETIRING = "gpt-4o-mini-2024-07-18"
STAYING = "gpt-4.1-mini-2025-04-14"
SHUTDOWN = dt.date(2026, 12, 6)


@pytest.fixture
def fake(fake_openai: FakeOpenAIServer) -> FakeOpenAIServer:
    fake_openai.api_key = SECRET
    return fake_openai


@pytest.fixture
def endpoint(fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> Endpoint:
    """The fake API registered as an OpenAI endpoint, its key in this worker's environment;
    the other endpoints (the seeded ones) are disabled so that only it is asked."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    registered = fake_endpoint(fake.base_url, secret_env=KEY_ENV, kind=EndpointKind.OPENAI)
    Endpoint.objects.exclude(pk=registered.pk).update(enabled=False)
    return registered


def hosted(key: str, endpoint: Endpoint, **dates: object) -> BaseModel:
    model, _ = BaseModel.objects.update_or_create(
        key=key,
        defaults={
            "display_name": key,
            "provider": Provider.OPENAI,
            "endpoint": endpoint,
            "training_usd_per_million_tokens": Decimal("3.00"),
            "retires_at": None,
            "deprecated_at": None,
            "fine_tuned_inference_ends_at": None,
            "lifecycle_source": "",
            "lifecycle_checked_at": None,
            **dates,
        },
    )
    return model


def fresh(model: BaseModel) -> BaseModel:
    return BaseModel.objects.get(pk=model.pk)


# --- dates read from the provider -----------------------------------------------------------


def test_an_announced_shutdown_date_is_set_with_its_source_and_an_unannounced_one_left_alone(
    endpoint: Endpoint, fake: FakeOpenAIServer
) -> None:
    retiring = hosted(RETIRING, endpoint)
    staying = hosted(STAYING, endpoint)
    unlisted = hosted("gpt-3.5-turbo-0125", endpoint)
    # The same id at another endpoint is that endpoint's model, not this list's.
    elsewhere_endpoint = fake_endpoint("http://127.0.0.1:9/v1", secret_env="OPENAI_API_KEY")
    Endpoint.objects.filter(pk=elsewhere_endpoint.pk).update(enabled=False)
    elsewhere = hosted("davinci-002", elsewhere_endpoint)
    fake.shutdown_dates = {RETIRING: SHUTDOWN, STAYING: None, "davinci-002": dt.date(2026, 11, 9)}

    [done] = lifecycle_refresh(now=NOW)

    assert (done.endpoint, done.error) == (endpoint.name, "")
    assert done.checked == (STAYING, RETIRING)
    assert done.changed == (RETIRING,)
    assert done.unlisted == ("gpt-3.5-turbo-0125",)
    retiring, staying, unlisted, elsewhere = map(fresh, (retiring, staying, unlisted, elsewhere))
    assert retiring.retires_at == SHUTDOWN
    assert retiring.lifecycle_source == "OpenAI GET /v1/models, 2026-11-01"
    assert retiring.lifecycle_checked_at == NOW
    # Listed without a date (null): checked, nothing set.
    assert (staying.retires_at, staying.lifecycle_source) == (None, "")
    assert staying.lifecycle_checked_at == NOW
    # Not listed: not checked at all.
    assert (unlisted.retires_at, unlisted.lifecycle_checked_at) == (None, None)
    assert (elsewhere.retires_at, elsewhere.lifecycle_checked_at) == (None, None)
    # One request, with the endpoint's own key.
    [request] = fake.models_list_requests
    assert request.headers["authorization"] == f"Bearer {SECRET}"


def test_a_moved_date_replaces_the_earlier_announcement_and_the_same_date_keeps_its_source(
    endpoint: Endpoint, fake: FakeOpenAIServer
) -> None:
    model = hosted(RETIRING, endpoint)
    fake.shutdown_dates = {RETIRING: SHUTDOWN}
    lifecycle_refresh(now=NOW)

    # Announced again the next day: nothing changes but the check's time.
    next_day = NOW + dt.timedelta(days=1)
    [same] = lifecycle_refresh(now=next_day)
    model = fresh(model)
    assert same.changed == ()
    assert model.retires_at == SHUTDOWN
    assert model.lifecycle_source == "OpenAI GET /v1/models, 2026-11-01"
    assert model.lifecycle_checked_at == next_day

    # Then the provider moves it: the new date and the day it was read.
    fake.shutdown_dates = {RETIRING: dt.date(2027, 3, 1)}
    later = NOW + dt.timedelta(days=10)
    [moved] = lifecycle_refresh(now=later)
    model = fresh(model)
    assert moved.changed == (RETIRING,)
    assert model.retires_at == dt.date(2027, 3, 1)
    assert model.lifecycle_source == "OpenAI GET /v1/models, 2026-11-11"

    # And stops saying a date (null, or the field left out): the announced one stays.
    fake.shutdown_dates = {RETIRING: None}
    [silent] = lifecycle_refresh(now=later + dt.timedelta(days=1))
    assert silent.changed == ()
    assert fresh(model).retires_at == dt.date(2027, 3, 1)


def test_a_manual_entry_stays_until_the_provider_announces_a_date_and_is_then_named_after_it(
    endpoint: Endpoint, fake: FakeOpenAIServer
) -> None:
    manual = "manual entry by alice, 2026-10-02"
    model = hosted(
        RETIRING,
        endpoint,
        retires_at=dt.date(2027, 6, 1),
        fine_tuned_inference_ends_at=dt.date(2027, 5, 1),
        lifecycle_source=manual,
    )
    # The provider lists the model without a date: the admin's dates stand.
    fake.shutdown_dates = {RETIRING: None}
    [kept] = lifecycle_refresh(now=NOW)
    model = fresh(model)
    assert kept.changed == ()
    assert (model.retires_at, model.lifecycle_source) == (dt.date(2027, 6, 1), manual)

    # It announces one: the provider's date wins; the other manual date and who entered it
    # are kept.
    fake.shutdown_dates = {RETIRING: SHUTDOWN}
    lifecycle_refresh(now=NOW)
    model = fresh(model)
    assert model.retires_at == SHUTDOWN
    assert model.fine_tuned_inference_ends_at == dt.date(2027, 5, 1)
    assert model.lifecycle_source == f"OpenAI GET /v1/models, 2026-11-01; before: {manual}"
    # A later move keeps naming the manual entry once, not the stale announcement.
    assert source_after(model.lifecycle_source, provider="P, 2026-12-01") == (
        f"P, 2026-12-01; before: {manual}"
    )


# --- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 500])
def test_a_list_that_cannot_be_read_changes_nothing_and_is_logged_without_the_key(
    endpoint: Endpoint,
    fake: FakeOpenAIServer,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    model = hosted(RETIRING, endpoint, retires_at=dt.date(2027, 6, 1), lifecycle_source="x")
    fake.shutdown_dates = {RETIRING: SHUTDOWN}
    # Some providers quote the key they refused, or echo the request in a server error.
    fake.fail_next_requests(1, status=status, message=f"Bad key provided: {SECRET}.")

    with caplog.at_level(logging.DEBUG):
        [done] = lifecycle_refresh(now=NOW)

    assert done.changed == () and done.checked == ()
    assert done.error.startswith(f"Lifecycle check: endpoint {endpoint.name}: ")
    assert done.error.endswith("No base model was changed.")
    assert f"HTTP {status}" in done.error
    if status == 401:
        assert "refused the key" in done.error
    else:
        assert "[key]" in done.error
    assert SECRET not in caplog.text
    assert SECRET not in done.error
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.getMessage() == done.error
    model = fresh(model)
    assert (model.retires_at, model.lifecycle_source) == (dt.date(2027, 6, 1), "x")
    assert model.lifecycle_checked_at is None


def test_a_read_list_logs_no_key_either(
    endpoint: Endpoint, fake: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    hosted(RETIRING, endpoint)
    fake.shutdown_dates = {RETIRING: SHUTDOWN}
    with caplog.at_level(logging.DEBUG):
        [done] = lifecycle_refresh(now=NOW)
    assert done.changed == (RETIRING,)
    assert any("shuts down on 2026-12-06" in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text


def test_one_endpoint_failing_leaves_the_others_checked(
    endpoint: Endpoint, fake: FakeOpenAIServer
) -> None:
    model = hosted(RETIRING, endpoint)
    fake.shutdown_dates = {RETIRING: SHUTDOWN}
    # A second endpoint nobody answers at (the port is closed), named first.
    dead = Endpoint.objects.create(
        name="aaa-unreachable",
        kind=EndpointKind.OPENAI_COMPATIBLE,
        base_url="http://127.0.0.1:9/v1",
        secret_env=KEY_ENV,
    )
    dead_model = hosted("llama-3.1-8b", dead, retires_at=dt.date(2027, 1, 1))

    failed, checked = lifecycle_refresh(now=NOW)

    assert failed.endpoint == "aaa-unreachable" and "could not reach" in failed.error
    assert checked.changed == (RETIRING,)
    assert fresh(model).retires_at == SHUTDOWN
    assert fresh(dead_model).retires_at == dt.date(2027, 1, 1)
    assert fresh(dead_model).lifecycle_checked_at is None


def test_an_unset_key_variable_is_named_and_nothing_is_asked(
    endpoint: Endpoint, fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosted(RETIRING, endpoint)
    monkeypatch.delenv(KEY_ENV)
    done = endpoint_lifecycle_refresh(endpoint=endpoint, now=NOW)
    assert f"the variable {KEY_ENV} is not set" in done.error
    assert fake.models_list_requests == []


def test_disabled_endpoints_and_endpoints_without_base_models_are_not_asked(
    endpoint: Endpoint, fake: FakeOpenAIServer
) -> None:
    # No base model names it yet.
    assert lifecycle_refresh(now=NOW) == []
    hosted(RETIRING, endpoint)
    Endpoint.objects.filter(pk=endpoint.pk).update(enabled=False)
    assert lifecycle_refresh(now=NOW) == []
    assert fake.models_list_requests == []


# --- command and task -----------------------------------------------------------------------


def test_the_command_and_the_task_run_the_same_check(
    endpoint: Endpoint, fake: FakeOpenAIServer
) -> None:
    hosted(RETIRING, endpoint)
    hosted("gpt-3.5-turbo-0125", endpoint)
    fake.shutdown_dates = {RETIRING: SHUTDOWN}
    out = StringIO()
    call_command("lifecycle_refresh", stdout=out)
    assert out.getvalue().strip() == (
        f"{endpoint.name}: 1 base models listed; dates changed: {RETIRING}. "
        "Not listed (left as they were): gpt-3.5-turbo-0125."
    )
    fake.shutdown_dates = {RETIRING: dt.date(2027, 2, 2)}
    assert lifecycle_refresh_daily() == 1
    fake.fail_next_requests(1, status=503)
    with pytest.raises(CommandError, match=f"Not checked: {endpoint.name}"):
        call_command("lifecycle_refresh", stdout=StringIO(), stderr=StringIO())


# --- events ---------------------------------------------------------------------------------


def test_events_name_every_dated_end_soonest_first_with_days_left(endpoint: Endpoint) -> None:
    endpoint.fine_tuning_ends_at = dt.date(2027, 1, 6)
    endpoint.save()
    model = hosted(
        RETIRING,
        endpoint,
        retires_at=dt.date(2027, 3, 1),
        deprecated_at=dt.date(2026, 10, 1),
        fine_tuned_inference_ends_at=dt.date(2027, 3, 1),
    )
    events = base_model_lifecycle_events(fresh(model), today=dt.date(2026, 11, 1))
    assert [(e.kind, e.date, e.days_left, e.passed) for e in events] == [
        (LifecycleEventKind.DEPRECATED, dt.date(2026, 10, 1), -31, True),
        (LifecycleEventKind.FINE_TUNING_ENDS, dt.date(2027, 1, 6), 66, False),
        (LifecycleEventKind.RETIRES, dt.date(2027, 3, 1), 120, False),
        (LifecycleEventKind.INFERENCE_ENDS, dt.date(2027, 3, 1), 120, False),
    ]
    assert events[0].words == (
        f"{RETIRING} takes no new fine-tuning jobs since 2026-10-01: retraining needs another "
        "base model"
    )
    assert events[1].words.startswith(
        f"the endpoint {endpoint.name} (OpenAI API) accepts no new fine-tuning jobs from 2027-01-06"
    )
    assert [e.stops_serving for e in events] == [False, False, True, True]


# --- the admin's manual entries -------------------------------------------------------------


def _admin_save(model: BaseModel, user: User, **changes: object) -> BaseModel:
    request = RequestFactory().post("/admin/")
    request.user = user
    model_admin = BaseModelAdmin(BaseModel, admin.site)
    form_class = model_admin.get_form(request, model, change=True)
    data = {k: ("" if v is None else v) for k, v in model_to_dict(model).items()}
    data.update(changes)
    form = form_class(data=data, instance=model)
    assert form.is_valid(), form.errors
    saved = form.save(commit=False)
    model_admin.save_model(request, saved, form, change=True)
    return fresh(model)


def test_an_admin_changing_a_date_is_recorded_as_a_manual_entry_unless_a_source_is_typed(
    endpoint: Endpoint,
) -> None:
    alice = User.objects.create_user("alice", is_staff=True, is_superuser=True)
    model = hosted(RETIRING, endpoint, lifecycle_source="OpenAI GET /v1/models, 2026-10-01")

    # A price changed: the source stays.
    model = _admin_save(model, alice, training_usd_per_million_tokens="4.00")
    assert model.lifecycle_source == "OpenAI GET /v1/models, 2026-10-01"

    model = _admin_save(model, alice, fine_tuned_inference_ends_at="2027-05-01")
    assert model.fine_tuned_inference_ends_at == dt.date(2027, 5, 1)
    assert model.lifecycle_source.startswith("manual entry by alice, ")
    dt.date.fromisoformat(model.lifecycle_source.rsplit(", ", 1)[1])

    model = _admin_save(
        model, alice, retires_at="2027-04-01", lifecycle_source="OpenAI's e-mail of 2026-10-30"
    )
    assert model.lifecycle_source == "OpenAI's e-mail of 2026-10-30"
    # The check's time is shown, never edited.
    assert "lifecycle_checked_at" in BaseModelAdmin(BaseModel, admin.site).readonly_fields


def test_the_admin_pages_show_the_lifecycle_fields(endpoint: Endpoint, client: Client) -> None:
    model = hosted(RETIRING, endpoint, lifecycle_checked_at=NOW)
    client.force_login(User.objects.create_user("root", is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:catalog_basemodel_change", args=[model.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    for field in ("fine_tuned_inference_ends_at", "lifecycle_source", "retires_at"):
        assert f'name="{field}"' in html
    # Shown, not a form field.
    assert 'name="lifecycle_checked_at"' not in html and "Lifecycle checked at" in html
    page = client.get(reverse("admin:catalog_endpoint_change", args=[endpoint.pk]))
    assert 'name="fine_tuning_ends_at"' in page.content.decode()
