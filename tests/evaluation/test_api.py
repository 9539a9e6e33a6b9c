"""Evaluations through the JSON API, without the worker: a run is queued with the version and
its base (or listed candidates and a judge) as candidates, bad bounds and a constraint without an
answer contract are refused, and the results endpoint lists and filters the answers."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from evaluation.models import EvalResult, EvalRun, EvalStatus
from ftportal.models import Project
from tests.api.builders import World, api
from tests.api.fixtures import api_world_fixture, lead_client_fixture  # noqa: F401

pytestmark = pytest.mark.django_db


def test_an_evaluation_is_queued_with_the_version_and_its_base_as_candidates(
    client: APIClient, project: Project, world: World
) -> None:
    response = client.post(
        api(project, "evaluations/"),
        {"model_version": world.second.pk, "max_new_tokens": 16},
        format="json",
    )

    assert response.status_code == 201, response.content
    run = response.json()
    assert run["status"] == "queued"
    assert run["max_new_tokens"] == 16
    assert run["split"] == "validation"
    candidates = run["candidates"]
    assert len(candidates) == 2  # the world's training split is too small for 5 shots
    assert [c["model_version"] for c in candidates] == [world.second.pk, None]
    assert [c["kind"] for c in candidates] == ["model_version", "base"]
    assert all(c["base_model"] == "smollm2-135m-instruct" for c in candidates)
    assert EvalRun.objects.get(pk=run["id"]).status == EvalStatus.QUEUED
    listing = client.get(api(project, "evaluations/")).json()["results"]
    # Newest first: this one, the world's, and those its promotions passed the gate with.
    gate_runs = [r.pk for r in reversed(world.gate_runs)]
    assert [r["id"] for r in listing] == [run["id"], world.eval_run.pk, *gate_runs]


def test_max_new_tokens_out_of_bounds_is_refused(
    client: APIClient, project: Project, world: World
) -> None:
    response = client.post(
        api(project, "evaluations/"),
        {"model_version": world.second.pk, "max_new_tokens": 0},
        format="json",
    )
    assert response.status_code == 400
    assert "max_new_tokens" in response.json()["error"]["message"]
    assert list(EvalRun.objects.all()) == [world.eval_run, *reversed(world.gate_runs)]


def test_the_results_endpoint_lists_answers_and_filters_a_wrong_b_right(
    client: APIClient, project: Project, world: World
) -> None:
    # Not the world's request (its run is still queued, and an identical one would get it).
    created = client.post(
        api(project, "evaluations/"),
        {"model_version": world.second.pk, "max_new_tokens": 32},
        format="json",
    ).json()
    run = EvalRun.objects.get(pk=created["id"])
    tuned, base = run.candidates.order_by("position")[:2]
    items = list(world.version.items.filter(split="validation"))
    for item in items:
        reference = item.messages[-1]["content"]
        EvalResult.objects.create(
            candidate=tuned, item=item, output="no idea", scores={"exact_match": 0.0}
        )
        EvalResult.objects.create(
            candidate=base, item=item, output=reference, scores={"exact_match": 1.0}
        )

    listed = client.get(api(project, f"evaluations/{run.pk}/results/")).json()["results"]
    a_wrong_b_right = client.get(
        api(project, f"evaluations/{run.pk}/results/"),
        {"a": str(tuned.pk), "b": str(base.pk), "outcome": "a_wrong_b_right"},
    ).json()["results"]
    a_right_b_wrong = client.get(
        api(project, f"evaluations/{run.pk}/results/"),
        {"a": str(tuned.pk), "b": str(base.pk), "outcome": "a_right_b_wrong"},
    ).json()["results"]
    bad = client.get(api(project, f"evaluations/{run.pk}/results/"), {"outcome": "sideways"})

    assert [row["position"] for row in listed] == [item.position for item in items]
    row = listed[0]
    assert row["candidate"] == tuned.pk
    assert row["prompt"] == items[0].messages[:-1]
    assert row["reference"] == items[0].messages[-1]["content"]
    assert (row["output"], row["scores"]) == ("no idea", {"exact_match": 0.0})
    assert len(a_wrong_b_right) == len(items) and a_right_b_wrong == []
    assert bad.status_code == 400 and "outcome" in bad.content.decode()


def test_a_constrained_candidate_needs_an_answer_contract_on_the_version(
    client: APIClient, project: Project, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {
        "dataset_version": world.version.pk,
        "candidates": [
            {"kind": "model_version", "model_version": world.second.pk},
            {"kind": "base", "base_model": "smollm2-135m-instruct", "constrained": True},
        ],
    }

    refused = client.post(api(project, "evaluations/"), body, format="json")
    world.version.answer_contract = {"kind": "regex", "pattern": "[a-z]+"}
    world.version.save(update_fields=["answer_contract"])
    accepted = client.post(api(project, "evaluations/"), body, format="json")

    assert refused.status_code == 400
    error = refused.json()["error"]
    assert "has no answer contract" in error["message"]
    assert "candidates[1].constrained" in refused.content.decode()
    assert accepted.status_code == 201, accepted.content
    candidates = accepted.json()["candidates"]
    assert [c["constrained"] for c in candidates] == [False, True]
    assert candidates[1]["label"].endswith(", constrained to contract")


def test_an_evaluation_with_listed_candidates_and_a_judge_is_queued(
    client: APIClient, project: Project, world: World
) -> None:
    body = {
        "dataset_version": world.version.pk,
        "candidates": [
            {"kind": "model_version", "model_version": world.second.pk},
            {
                "kind": "openai_compatible",
                "api_model": "gpt-4o-mini",
                "endpoint": "openai",
                "user_template": "Ticket: {input}",
                "input_usd_per_million_tokens": "0.30",
                "output_usd_per_million_tokens": "1.20",
            },
        ],
        "primary_metric": "token_f1",
        "judge": {
            "kind": "anthropic",
            "model": "claude-haiku-4-5",
            "endpoint": "anthropic",
            "max_new_tokens": 300,
        },
    }

    response = client.post(api(project, "evaluations/"), body, format="json")
    refused = client.post(
        api(project, "evaluations/"),
        {**body, "judge": {"kind": "anthropic", "model": " ", "endpoint": "anthropic"}},
        format="json",
    )

    assert response.status_code == 201, response.content
    run = response.json()
    assert (run["judge_kind"], run["judge_model"], run["judge_max_new_tokens"]) == (
        "anthropic",
        "claude-haiku-4-5",
        300,
    )
    assert [c["kind"] for c in run["candidates"]] == ["model_version", "openai_compatible"]
    assert [c["endpoint"] for c in run["candidates"]] == [None, "openai"]
    assert run["judge_endpoint"] == "anthropic"
    assert run["candidates"][1]["input_usd_per_million_tokens"] == "0.3000"
    assert refused.status_code == 400 and "judge" in refused.content.decode()
    # The world's (one queued, two its promotions passed the gate with) and this one.
    assert EvalRun.objects.count() == 2 + len(world.gate_runs)
