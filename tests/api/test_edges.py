"""Bad input at the API's and the pages' edges is a clear 400, and every API failure is JSON in
the one error shape: numbers past the database's range, ids that are not ids, unknown URLs,
unexpected server errors."""

from __future__ import annotations

import json

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from datasets.models import DatasetVersion
from evaluation.models import EvalResult
from ftportal import api_errors
from ftportal.roles import Role

from .builders import World, token_client

pytestmark = pytest.mark.django_db

TOO_BIG = 18446744073709551616  # 2**64: past every integer column


def api(world: World, path: str) -> str:
    return f"/api/projects/{world.project.pk}/{path}"


def test_an_id_past_the_databases_range_is_a_400_that_names_the_field(world: World) -> None:
    client = token_client(world.owner)
    before = list(EvalResult.objects.values_list("id", "sent_to_review"))

    response = client.post(
        api(world, f"evaluations/{world.eval_run.pk}/send-to-review/"),
        {"results": [TOO_BIG]},
        format="json",
    )

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["results"]
    assert list(EvalResult.objects.values_list("id", "sent_to_review")) == before


@pytest.mark.parametrize("value", [TOO_BIG, -(2**40)])
def test_an_unbounded_whole_number_input_is_bounded_to_the_databases_range(
    world: World, value: int
) -> None:
    # max_new_tokens declares no bounds of its own; the shared InputSerializer gives it the
    # integer column's range, so the number never reaches the database.
    response = token_client(world.owner).post(
        api(world, f"training-jobs/{world.queued_job.pk}/evaluate-checkpoints/"),
        {"max_new_tokens": value},
        format="json",
    )

    assert response.status_code == 400
    assert "max_new_tokens" in response.json()["error"]["fields"]


@pytest.mark.parametrize("against", ["abc", "²", "-1", "0", str(TOO_BIG)])
def test_the_compare_page_answers_400_naming_against_for_what_is_not_an_id(
    world: World, against: str
) -> None:
    client = Client()
    client.force_login(world.owner)
    url = reverse("version_compare", args=[world.project.pk, world.version.pk])

    response = client.get(url, {"against": against})

    assert response.status_code == 400
    assert "against: expected an id" in response.content.decode()


def test_the_compare_page_and_api_still_compare_with_a_real_version(world: World) -> None:
    client = Client()
    client.force_login(world.owner)
    page = reverse("version_compare", args=[world.project.pk, world.version.pk])
    assert client.get(page, {"against": world.version.pk}).status_code == 200
    diff = api(world, f"dataset-versions/{world.version.pk}/diff/")
    assert client.get(diff, {"against": world.version.pk}).json()["unchanged"] > 0
    missing = DatasetVersion.objects.order_by("-pk")[0].pk + 1000
    assert client.get(diff, {"against": missing}).status_code == 404
    refused = client.get(diff, {"against": "²"})
    assert refused.status_code == 400
    assert list(refused.json()["error"]["fields"]) == ["against"]


@pytest.mark.parametrize(
    "path",
    ["examples/?status=", "dataset-versions/{version}/export/?split="],
)
def test_an_empty_enum_query_parameter_is_refused_not_ignored(world: World, path: str) -> None:
    path = path.replace("examples/", f"datasets/{world.dataset.pk}/examples/")
    url = api(world, path.format(version=world.version.pk))

    response = token_client(world.owner).get(url)

    assert response.status_code == 400
    name = path.rsplit("?", 1)[1].rstrip("=")
    assert list(response.json()["error"]["fields"]) == [name]


def test_an_array_body_is_refused_where_an_object_is_expected(world: World) -> None:
    response = token_client(world.owner).post(
        api(world, f"training-jobs/{world.queued_job.pk}/evaluate-checkpoints/"),
        [1, 2],
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Invalid input."


@pytest.mark.parametrize("path", ["/api/nothing-here/", "/api/projects/1/no-such-thing/"])
def test_an_unknown_api_url_is_a_json_404(world: World, path: str) -> None:
    response = token_client(world.owner).get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["message"].startswith("Not found")


def test_a_malformed_json_body_is_a_json_400(world: World) -> None:
    response = token_client(world.owner).post(
        api(world, f"evaluations/{world.eval_run.pk}/send-to-review/"),
        data="{not json",
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["error"]["message"]


def test_an_unexpected_error_in_an_api_view_is_a_json_500_without_internals(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail: /srv/ftportal/var/artifacts and DATABASE_URL")

    monkeypatch.setattr("datasets.api.version_diff", broken)

    response = token_client(world.owner).get(
        api(world, f"dataset-versions/{world.version.pk}/diff/")
    )

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    body = response.content.decode()
    assert "Something went wrong on the server" in response.json()["error"]["message"]
    assert "secret detail" not in body and "Traceback" not in body
    # The details go to the log, for whoever runs the server.
    assert "secret detail" in caplog.text


@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "limit=501", "offset=-1", "offset=1.5"])
def test_page_parameters_that_are_not_in_range_are_refused_not_replaced(
    world: World, query: str
) -> None:
    response = token_client(world.owner).get(api(world, f"datasets/?{query}"))

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [query.split("=")[0]]


def test_an_example_without_a_contract_documents_its_null_contract_violation(
    world: World,
) -> None:
    body = token_client(world.owner).get(api(world, f"examples/{world.pending.pk}/")).json()
    assert body["contract_violation"] is None
    schema = token_client(world.owner).get("/api/schema/", {"format": "json"}).json()
    field = schema["components"]["schemas"]["ExampleDetailOutput"]["properties"]
    assert field["contract_violation"].get("nullable") is True


def test_digits_that_int_refuses_are_a_clear_400_on_pages_not_a_500(
    world: World, make_member
) -> None:
    # "²" passes str.isdigit(), which these forms used to check before int() (a ValueError).
    admin = Client()
    admin.force_login(make_member(Role.ADMIN))
    members = reverse("members", args=[world.project.pk])
    response = admin.post(members, {"operation": "change", "user": "²", "role": "reviewer"})
    assert response.status_code == 400
    lead = Client()
    lead.force_login(world.owner)
    send = reverse("eval_send_to_review", args=[world.project.pk, world.eval_run.pk])
    assert lead.post(send, {"results": ["²"]}).status_code == 400
    quality = reverse("dataset_quality", args=[world.project.pk, world.dataset.pk])
    assert lead.get(quality, {"run": "²"}).status_code == 200  # the latest analysis, as before


def test_a_method_an_endpoint_does_not_take_is_a_json_405(world: World) -> None:
    response = token_client(world.owner).delete("/api/projects/")

    assert response.status_code == 405
    assert response.json() == {"error": {"message": 'Method "DELETE" not allowed.'}}


def test_errors_django_answers_before_any_view_are_json_under_api_and_pages_elsewhere() -> None:
    # What Django calls for a failure outside a DRF view (a middleware's exception, a refused
    # request): the API's shape under /api/, the usual pages elsewhere.
    factory = RequestFactory()
    api_500 = api_errors.server_error(factory.get("/api/projects/"))
    assert api_500.status_code == 500
    assert json.loads(api_500.content)["error"]["message"] == api_errors.SERVER_ERROR_MESSAGE
    api_400 = api_errors.bad_request(factory.get("/api/projects/"), ValueError("x"))
    assert json.loads(api_400.content) == {"error": {"message": "Bad request."}}
    page_500 = api_errors.server_error(factory.get("/projects/"))
    assert page_500.status_code == 500
    assert page_500["Content-Type"].startswith("text/html")
