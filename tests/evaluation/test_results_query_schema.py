"""The results list's query parameters in the OpenAPI schema: every parameter the list reads is
declared, with its type (a candidate id is an integer, an outcome or a metric one of a listed
few, a threshold a number from 0 to 1), and a value of the wrong type is refused naming it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from drf_spectacular.generators import SchemaGenerator

from evaluation.models import EvalRun
from evaluation.scoring import METRICS
from evaluation.selectors import OUTCOMES, RESULT_ORDERS, ResultFilter
from ftportal.models import Project
from ftportal.roles import Role
from tests.api.builders import World, api, token_client
from tests.api.fixtures import api_world_fixture  # noqa: F401  (`world`)

pytestmark = pytest.mark.django_db

RESULTS_PATH = "/api/projects/{project_id}/evaluations/{run_id}/results/"


def query_parameters() -> dict[str, dict[str, Any]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"][RESULTS_PATH]["get"]
    return {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}


class AskedFor(dict[str, str]):
    """An empty query string that notes every parameter read from it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return default


def test_every_parameter_the_filter_reads_is_declared(world: World) -> None:
    query = AskedFor()

    ResultFilter.from_query(world.eval_run, query)

    assert query.asked, "the filter read nothing: the check would prove nothing"
    assert query.asked <= set(query_parameters())


def test_each_parameter_is_declared_with_its_type() -> None:
    declared = query_parameters()

    for candidate in ("a", "b"):
        assert declared[candidate]["schema"]["type"] == "integer"
        assert "candidate id" in declared[candidate]["description"]
    assert declared["outcome"]["schema"]["enum"] == list(OUTCOMES)
    assert declared["metric"]["schema"]["enum"] == list(METRICS)
    threshold = declared["threshold"]["schema"]
    assert (threshold["type"], threshold["minimum"], threshold["maximum"]) == ("number", 0, 1)
    assert declared["tag"]["schema"]["type"] == "string"
    assert declared["order"]["schema"]["enum"] == list(RESULT_ORDERS)
    assert {"limit", "offset"} <= set(declared)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"a": "first"}, "a"),
        ({"b": "-3"}, "b"),
        ({"outcome": "sideways"}, "outcome"),
        ({"metric": "vibes"}, "metric"),
        ({"threshold": "2"}, "threshold"),
        ({"order": "random"}, "order"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_its_parameter(
    world: World, make_member: Callable[[Role], User], query: dict[str, str], field: str
) -> None:
    client = token_client(make_member(Role.REVIEWER))
    run: EvalRun = world.eval_run
    project: Project = world.project

    response = client.get(api(project, f"evaluations/{run.pk}/results/"), query)

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]


def test_the_candidate_filter_lists_that_candidates_answers(
    world: World, make_member: Callable[[Role], User]
) -> None:
    client = token_client(make_member(Role.REVIEWER))
    run: EvalRun = world.eval_run
    answered = world.eval_result.candidate_id
    others = [c.pk for c in run.candidates.all() if c.pk != answered]
    url = api(world.project, f"evaluations/{run.pk}/results/")

    mine = client.get(url, {"a": str(answered)}).json()["results"]
    theirs = client.get(url, {"a": str(others[0])}).json()["results"]

    assert [row["id"] for row in mine] == [world.eval_result.pk]
    assert theirs == []
