"""The evaluation pages: the new-evaluation form, the run page, the dashboard, the checkpoint
sweep and resuming; every write checks the role and a refused one changes nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from catalog.models import BaseModel
from datasets.models import DatasetVersion
from evaluation.models import (
    Candidate,
    CandidateKind,
    EvalKind,
    EvalRun,
    EvalStatus,
    HumanPreference,
    Prompting,
)
from evaluation.services import CandidateSpec
from ftportal.models import Project
from ftportal.roles import Role
from registry.models import ModelVersion, RegisteredModel
from tests.api.builders import register_model_version
from tests.charts import page_charts, series_points
from tests.evaluation.finished_runs import finished_run
from tests.factories import frozen_version
from training.models import Checkpoint, JobStatus

pytestmark = pytest.mark.django_db
WRITERS = (Role.ML_LEAD, Role.ADMIN)


@pytest.fixture
def lead(make_member: Callable[[Role], User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def version(project: Project, lead: User) -> DatasetVersion:
    return frozen_version(project, lead, count=40)


@pytest.fixture
def tuned(version: DatasetVersion, lead: User, base_model: BaseModel) -> ModelVersion:
    return register_model_version(
        version=version, base_model=base_model, user=lead, model_name="triage"
    )


def new_form(version: DatasetVersion, tuned: ModelVersion, **changes: str) -> dict[str, object]:
    form: dict[str, object] = {
        "dataset_version": str(version.pk),
        "split": "validation",
        "model_versions": [str(tuned.pk)],
        "base_model": "smollm2-135m-instruct",
        "base_zero_shot": "1",
        "few_shot_k": "3",
        "few_shot_seed": "7",
        "external_endpoint": "openai",
        "external_model": "gpt-4o-mini",
        "external_input_price": "0.30",
        "external_output_price": "1.20",
        "primary_metric": "token_f1",
        "max_new_tokens": "32",
    }
    form.update(changes)
    return form


def test_the_form_queues_one_run_with_every_chosen_candidate_in_order(
    client: Client, project: Project, lead: User, version: DatasetVersion, tuned: ModelVersion
) -> None:
    client.force_login(lead)
    assert client.get(reverse("eval_new", args=[project.pk])).status_code == 200

    response = client.post(reverse("eval_new", args=[project.pk]), new_form(version, tuned))

    run = EvalRun.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/{run.pk}/")
    assert (run.primary_metric, run.max_new_tokens, run.status) == ("token_f1", 32, "queued")
    kinds = list(run.candidates.values_list("kind", "prompting", "few_shot_k", "few_shot_seed"))
    assert kinds == [
        (CandidateKind.MODEL_VERSION, Prompting.ZERO_SHOT, 0, 0),
        (CandidateKind.BASE, Prompting.ZERO_SHOT, 0, 0),
        (CandidateKind.BASE, Prompting.FEW_SHOT, 3, 7),
        (CandidateKind.OPENAI_COMPATIBLE, Prompting.ZERO_SHOT, 0, 0),
    ]
    external = run.candidates.get(kind=CandidateKind.OPENAI_COMPATIBLE)
    assert str(external.input_usd_per_million_tokens) == "0.3000"
    assert external.endpoint is not None and external.endpoint.name == "openai"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dataset_version": "999999"}, "dataset_version"),
        ({"few_shot_k": "three"}, "few_shot_k"),
        ({"external_input_price": "cheap"}, "external_input_price"),
        ({"external_model": ""}, "candidates[3].api_model"),
        ({"regex_check": "(["}, "regex_check"),
        (
            {"judge_kind": "endpoint", "judge_endpoint": "anthropic", "judge_model": ""},
            "judge.model",
        ),
        ({"judge_kind": "endpoint", "judge_model": "claude-haiku-4-5"}, "judge_endpoint"),
        ({"external_endpoint": "attacker"}, "external_endpoint"),
    ],
)
def test_a_bad_field_comes_back_named_with_what_was_typed_and_nothing_is_queued(
    client: Client,
    project: Project,
    lead: User,
    version: DatasetVersion,
    tuned: ModelVersion,
    change: dict[str, str],
    field: str,
) -> None:
    client.force_login(lead)

    response = client.post(
        reverse("eval_new", args=[project.pk]), new_form(version, tuned, **change)
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert f'data-field="{field}"' in html
    assert 'name="max_new_tokens" min="1" max="1024" value="32"' in html  # typed, kept
    assert not EvalRun.objects.exists()


@pytest.mark.parametrize("role", [Role.REVIEWER, Role.MANAGER])
def test_only_leads_and_admins_start_evaluations(
    client: Client,
    project: Project,
    version: DatasetVersion,
    tuned: ModelVersion,
    make_member: Callable[[Role], User],
    role: Role,
) -> None:
    client.force_login(make_member(role))
    assert client.get(reverse("eval_new", args=[project.pk])).status_code == 403
    response = client.post(reverse("eval_new", args=[project.pk]), new_form(version, tuned))
    assert response.status_code == 403
    assert not EvalRun.objects.exists()


def test_an_outsider_cannot_see_that_the_project_exists(
    client: Client, project: Project, make_member: Callable[..., User]
) -> None:
    client.force_login(make_member(Role.ADMIN, target=Project.objects.create(name="other")))
    assert client.get(reverse("eval_list", args=[project.pk])).status_code == 404
    assert client.get(reverse("eval_new", args=[project.pk])).status_code == 404


def test_the_dashboard_charts_each_metric_across_versions_and_lists_the_history(
    client: Client,
    project: Project,
    lead: User,
    version: DatasetVersion,
    base_model: BaseModel,
    make_member: Callable[[Role], User],
) -> None:
    items = version.validation_count
    for right in (2, 6):  # version 1 gets 2 items right, version 2 gets 6
        model_version = register_model_version(
            version=version, base_model=base_model, user=lead, model_name="triage"
        )
        finished_run(
            version=version,
            user=lead,
            answers=[
                (
                    CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=model_version),
                    [i < right for i in range(items)],
                ),
                (CandidateSpec(kind=CandidateKind.BASE, base_model=base_model), [False] * items),
            ],
        )
    client.force_login(make_member(Role.MANAGER))

    html = client.get(reverse("eval_list", args=[project.pk])).content.decode()

    first, second = 2 / items * 100, 6 / items * 100
    assert 'data-metric="exact_match"' in html
    assert f"fine-tuned version: v1 {first:.1f} %, v2 {second:.1f} %" in html
    assert "SmolLM2-135M-Instruct (zero-shot): v1 0.0 %, v2 0.0 %" in html
    model = RegisteredModel.objects.get(project=project, name="triage")
    charts = page_charts(html)
    assert len(charts) == html.count("data-metric=")  # one drawn chart per metric
    exact = charts[f"model-{model.pk}-exact_match-chart"]
    assert exact["x"]["title"] == "Model version" and exact["x"]["labels"] == ["v1", "v2"]
    assert exact["y"] | {"labels": None} == {
        "title": "Exact match (%)",
        "format": "percent",
        "min": 0.0,
        "max": 1.0,
        "labels": None,
    }
    assert series_points(exact) == {
        "fine-tuned version": [["v1", pytest.approx(2 / items)], ["v2", pytest.approx(6 / items)]],
        "SmolLM2-135M-Instruct (zero-shot)": [["v1", 0.0], ["v2", 0.0]],
    }
    assert html.count('class="eval-history"') == 1
    assert html.count(f"{second:.1f} %</td>") == 1  # the history row of version 2


def test_the_dashboard_chart_escapes_the_model_name(
    client: Client, project: Project, lead: User, version: DatasetVersion, base_model: BaseModel
) -> None:
    hostile = "<script>window.__xss=1</script>"
    model_version = register_model_version(
        version=version, base_model=base_model, user=lead, model_name=hostile
    )
    spec = CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=model_version)
    finished_run(version=version, user=lead, answers=[(spec, [True])])
    client.force_login(lead)

    html = client.get(reverse("eval_list", args=[project.pk])).content.decode()

    assert hostile not in html
    assert 'aria-label="Exact match of each candidate across versions of &lt;script&gt;' in html
    [chart] = [c for name, c in page_charts(html).items() if name.endswith("-exact_match-chart")]
    assert series_points(chart) == {"fine-tuned version": [["v1", 1 / version.validation_count]]}


def test_a_checkpoint_sweep_recommends_by_the_task_metric_not_the_loss(
    client: Client, project: Project, lead: User, version: DatasetVersion, tuned: ModelVersion
) -> None:
    job = tuned.training_job
    early = Checkpoint.objects.create(job=job, step=10, path="/a/10", val_loss=0.9)
    late = Checkpoint.objects.create(job=job, step=20, path="/a/20", val_loss=0.5)
    items = version.validation_count
    client.force_login(lead)
    response = client.post(reverse("checkpoint_sweep", args=[project.pk, job.pk]))
    queued = EvalRun.objects.get()
    assert response.status_code == 302 and queued.kind == EvalKind.CHECKPOINTS
    assert list(queued.candidates.values_list("checkpoint_id", flat=True)) == [early.pk, late.pk]

    run = finished_run(
        version=version,
        user=lead,
        kind=EvalKind.CHECKPOINTS,
        training_job=job,
        answers=[
            (CandidateSpec(kind=CandidateKind.CHECKPOINT, checkpoint=early), [True] * items),
            (CandidateSpec(kind=CandidateKind.CHECKPOINT, checkpoint=late), [False] * items),
        ],
    )

    recommendation = run.report["recommendation"]
    assert recommendation["checkpoint"] == early.pk and recommendation["step"] == 10
    assert "lowest validation loss (0.500)" in recommendation["sentence"]
    page = client.get(reverse("eval_detail", args=[project.pk, run.pk])).content.decode()
    assert 'id="checkpoint-recommendation"' in page
    sweep = page_charts(page)["sweep-chart-data"]  # the metric and the loss, step by step
    assert sweep["series"] == [
        {"name": "Exact match", "axis": "y", "points": [[10, 1.0], [20, 0.0]]},
        {"name": "Validation loss", "axis": "y2", "points": [[10, 0.9], [20, 0.5]]},
    ]
    assert (sweep["x"]["title"], sweep["y"]["title"]) == ("Checkpoint step", "Exact match (%)")
    assert sweep["y2"]["title"] == "Loss (cross-entropy per token)"
    job.status = JobStatus.SUCCEEDED
    job.save()
    job_page = client.get(reverse("job_detail", args=[project.pk, job.pk])).content.decode()
    assert 'id="evaluate-checkpoints"' in job_page and "Keep " in job_page


def test_a_failed_run_can_be_resumed_by_a_lead_but_not_by_a_reviewer(
    client: Client,
    project: Project,
    lead: User,
    version: DatasetVersion,
    tuned: ModelVersion,
    make_member: Callable[[Role], User],
) -> None:
    run = finished_run(
        version=version,
        user=lead,
        answers=[(CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=tuned), [True])],
    )
    EvalRun.objects.filter(pk=run.pk).update(status=EvalStatus.FAILED, error="Item 3: 503")
    url = reverse("eval_resume", args=[project.pk, run.pk])

    client.force_login(make_member(Role.REVIEWER))
    assert client.post(url).status_code == 403
    run.refresh_from_db()
    assert run.status == EvalStatus.FAILED
    client.force_login(lead)
    page = client.get(reverse("eval_detail", args=[project.pk, run.pk])).content.decode()
    assert 'id="eval-resume"' in page
    assert client.post(url).status_code == 302
    run.refresh_from_db()
    assert run.status == EvalStatus.QUEUED and run.error == ""
    assert Candidate.objects.get(run=run).results.count() == version.validation_count


def test_people_rate_pairs_blind_and_their_side_maps_back_to_the_candidate(
    client: Client,
    project: Project,
    lead: User,
    version: DatasetVersion,
    tuned: ModelVersion,
    base_model: BaseModel,
    make_member: Callable[[Role], User],
) -> None:
    items = version.validation_count
    run = finished_run(
        version=version,
        user=lead,
        answers=[
            (CandidateSpec(kind=CandidateKind.MODEL_VERSION, model_version=tuned), [True] * items),
            (CandidateSpec(kind=CandidateKind.BASE, base_model=base_model), [False] * items),
        ],
    )
    reference, base = run.candidates.all()
    url = reverse("eval_rate", args=[project.pk, run.pk])
    rater = make_member(Role.REVIEWER)
    client.force_login(make_member(Role.MANAGER))
    assert client.get(url).status_code == 403
    client.force_login(rater)

    for _ in range(items):
        card = client.get(url).content.decode()
        item = int(card.split('name="item" value="')[1].split('"')[0])
        # The right answer is the reference's; pick whichever side shows it.
        left = card.split('id="answer-left">')[1].split("</pre>")[0]
        side = "right" if left == "wrong" else "left"
        response = client.post(url, {"b": str(base.pk), "item": str(item), "side": side})
        assert response.status_code == 200

    assert 'id="rate-done"' in client.get(url).content.decode()
    choices = HumanPreference.objects.filter(rater=rater, candidate_a=reference, candidate_b=base)
    assert choices.count() == items and set(choices.values_list("choice", flat=True)) == {"a"}
    bad = client.post(url, {"b": str(base.pk), "item": str(item), "side": "up"})
    assert bad.status_code == 400 and "side" in bad.content.decode()


def test_constraining_without_an_answer_contract_comes_back_named_and_nothing_is_queued(
    client: Client, project: Project, lead: User, version: DatasetVersion, tuned: ModelVersion
) -> None:
    client.force_login(lead)

    response = client.post(
        reverse("eval_new", args=[project.pk]),
        new_form(version, tuned, base_constrained="1"),
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert 'data-field="candidates[2].constrained"' in html
    assert "has no answer contract to constrain generation to" in html
    assert not EvalRun.objects.exists()


def test_a_constrained_candidate_is_named_so_on_the_evaluation_page(
    client: Client,
    project: Project,
    lead: User,
    version: DatasetVersion,
    tuned: ModelVersion,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    version.answer_contract = {"kind": "label_set", "labels": ["billing", "bug"]}
    version.save(update_fields=["answer_contract"])
    client.force_login(lead)

    response = client.post(
        reverse("eval_new", args=[project.pk]),
        new_form(version, tuned, base_constrained="1", versions_constrained="1"),
    )

    run = EvalRun.objects.get()
    assert response.status_code == 302
    constrained = run.candidates.filter(constrained=True)
    assert [(c.kind, c.label.endswith(", constrained to contract")) for c in constrained] == [
        (CandidateKind.MODEL_VERSION, True),
        (CandidateKind.BASE, True),
    ]
    page = client.get(response["Location"]).content.decode()
    assert "SmolLM2-135M-Instruct (zero-shot), constrained to contract" in page


def test_the_form_asks_for_label_ranking_with_an_abstention_threshold(
    client: Client, project: Project, lead: User, version: DatasetVersion, tuned: ModelVersion
) -> None:
    version.answer_contract = {"kind": "label_set", "labels": ["billing", "bug"]}
    version.save(update_fields=["answer_contract"])
    client.force_login(lead)
    url = reverse("eval_new", args=[project.pk])

    bad = client.post(url, new_form(version, tuned, versions_label_scoring="1", abstain_below="x"))
    response = client.post(
        url,
        new_form(
            version, tuned, versions_label_scoring="1", abstain_below="0.4", base_label_scoring="1"
        ),
    )

    assert bad.status_code == 400
    assert "abstain_below" in bad.content.decode()
    assert response.status_code == 302
    ranked = EvalRun.objects.get().candidates.filter(label_scoring=True).order_by("position")
    assert [(c.kind, c.abstain_below) for c in ranked] == [
        (CandidateKind.MODEL_VERSION, 0.4),
        (CandidateKind.BASE, None),
    ]
    page = client.get(response["Location"]).content.decode()
    assert "SmolLM2-135M-Instruct (zero-shot), ranking labels by likelihood" in page
