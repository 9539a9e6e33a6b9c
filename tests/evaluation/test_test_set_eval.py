"""Evaluating on a held-out test set: it is scored whole (a request for its validation split is
made "every item"), few-shot examples never come from it, the job page's evaluate shortcut
offers the project's test sets (the newest chosen), the API's shortcut takes one, and the
contamination check reads its items like any held-out set's."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from bench.test_set_overlap import tickets
from catalog.models import BaseModel
from datasets.models import DatasetVersion, Split
from datasets.services import dataset_version_freeze
from evaluation import runner
from evaluation.contamination import run_contamination
from evaluation.models import CandidateKind, EvalRun, EvalSplit, Prompting
from evaluation.services import CandidateSpec, eval_run_create, eval_run_for_version
from ftportal.errors import ApplicationError
from ftportal.models import Project
from ftportal.roles import Role
from registry.models import ModelVersion
from tests.api.builders import register_model_version, token_client
from tests.datasets.held_out_sets import HeldOutWorld, approved_dataset, held_out_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead(make_member: Callable[..., User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def world(project: Project, lead: User) -> HeldOutWorld:
    return held_out_world(project, lead, train=2000, test=300, exact=10, near=6)


@pytest.fixture
def fine_tuned(world: HeldOutWorld, lead: User, base_model: BaseModel) -> ModelVersion:
    return register_model_version(
        version=world.training, base_model=base_model, user=lead, model_name="tickets ✓"
    )


def few_shot(base_model: BaseModel, **extra: object) -> CandidateSpec:
    return CandidateSpec(
        kind=CandidateKind.BASE,
        base_model=base_model,
        prompting=Prompting.FEW_SHOT,
        few_shot_k=5,
        **extra,  # type: ignore[arg-type]
    )


def text_of(response) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def test_a_test_set_is_evaluated_whole_even_when_its_validation_split_is_asked_for(
    project: Project, lead: User, world: HeldOutWorld, base_model: BaseModel
) -> None:
    run = eval_run_create(
        project=project,
        dataset_version=world.test_set,
        split=EvalSplit.VALIDATION,
        candidates=[CandidateSpec(kind=CandidateKind.BASE, base_model=base_model)],
        user=lead,
    )
    assert run.split == EvalSplit.ALL
    items = runner.test_items(run)
    assert len(items) == 300 and {i.split for i in items} == {Split.TEST}


def test_few_shot_examples_never_come_from_a_test_set(
    project: Project, lead: User, world: HeldOutWorld, base_model: BaseModel
) -> None:
    # Left to default, the shots would come from the evaluated version: a test set.
    with pytest.raises(ApplicationError) as refused:
        eval_run_create(
            project=project,
            dataset_version=world.test_set,
            candidates=[few_shot(base_model)],
            user=lead,
        )
    assert refused.value.extra["field"] == "candidates[0].shots_version"
    assert f"{world.test_set} is a held-out test set" in refused.value.message
    # Named as the source for a run on a training version's validation split: refused too.
    with pytest.raises(ApplicationError) as named:
        eval_run_create(
            project=project,
            dataset_version=world.training,
            candidates=[few_shot(base_model, shots_version=world.test_set)],
            user=lead,
        )
    assert named.value.extra["field"] == "candidates[0].shots_version"
    # From a training version's train split: every shot is one of its training items.
    run = eval_run_create(
        project=project,
        dataset_version=world.test_set,
        candidates=[few_shot(base_model, shots_version=world.training)],
        user=lead,
    )
    candidate = run.candidates.get()
    assert candidate.shots_version == world.training
    items = runner.test_items(run)
    prompts = runner.candidate_prompts(candidate, items[:1], items)
    train_inputs = set(
        world.training.items.filter(split=Split.TRAIN).values_list(
            "messages__1__content", flat=True
        )
    )
    shown = [m["content"] for m in prompts[0] if m["role"] == "user"][:-1]
    assert len(shown) == 5 and set(shown) <= train_inputs


def test_the_version_shortcut_evaluates_on_a_test_set_with_shots_from_its_training_data(
    project: Project, lead: User, world: HeldOutWorld, fine_tuned: ModelVersion
) -> None:
    run = eval_run_for_version(
        project=project, model_version=fine_tuned, user=lead, test_set=world.test_set
    )
    assert (run.dataset_version, run.split) == (world.test_set, EvalSplit.ALL)
    shots = {c.prompting: c.shots_version for c in run.candidates.all()}
    assert shots[Prompting.FEW_SHOT] == world.training
    with pytest.raises(ApplicationError) as refused:
        eval_run_for_version(
            project=project, model_version=fine_tuned, user=lead, test_set=world.training
        )
    assert refused.value.extra["field"] == "test_set"


def test_on_a_label_set_the_shortcut_constrains_every_local_candidate(
    project: Project, lead: User, world: HeldOutWorld, fine_tuned: ModelVersion
) -> None:
    plain = eval_run_for_version(
        project=project, model_version=fine_tuned, user=lead, test_set=world.test_set
    )
    answers = {item.messages[-1]["content"] for item in world.test_set.items.all()}
    world.test_set.answer_contract = {"kind": "label_set", "labels": sorted(answers)}
    world.test_set.save(update_fields=["answer_contract"])

    labelled = eval_run_for_version(
        project=project, model_version=fine_tuned, user=lead, test_set=world.test_set
    )

    assert not any(c.constrained for c in plain.candidates.all())
    candidates = list(labelled.candidates.order_by("position"))
    assert len(candidates) >= 3
    assert all(c.constrained for c in candidates), [c.label for c in candidates]


def test_the_job_page_offers_the_test_sets_with_the_newest_chosen(
    project: Project, lead: User, world: HeldOutWorld, fine_tuned: ModelVersion
) -> None:
    newest = dataset_version_freeze(
        dataset=approved_dataset(
            project, "newer held-out", tickets(40, seed=90, first_number=10**8)
        ),
        user=lead,
        test_set=True,
    )
    client = Client()
    client.force_login(lead)
    page = client.get(reverse("job_detail", args=[project.pk, fine_tuned.training_job_id]))
    html = page.content.decode()
    options = re.findall(
        r'<option value="(\d*)"( selected)?>', html[html.index('id="evaluate-on"') :]
    )
    assert options[:3] == [(str(newest.pk), " selected"), (str(world.test_set.pk), ""), ("", "")]
    assert f"the held-out test set {newest}" in text_of(page)
    assert f"the validation split of {world.training}" in text_of(page)


def test_the_evaluate_shortcut_runs_on_the_chosen_test_set_or_the_validation_split(
    project: Project, lead: User, world: HeldOutWorld, fine_tuned: ModelVersion
) -> None:
    client = Client()
    client.force_login(lead)
    url = reverse("eval_create", args=[project.pk, fine_tuned.pk])
    response = client.post(url, {"test_set": str(world.test_set.pk)})
    run = EvalRun.objects.get()
    assert response["Location"] == reverse("eval_detail", args=[project.pk, run.pk])
    assert (run.dataset_version, run.split) == (world.test_set, EvalSplit.ALL)
    client.post(url, {"test_set": ""})
    own = EvalRun.objects.exclude(pk=run.pk).get()
    assert (own.dataset_version, own.split) == (world.training, EvalSplit.VALIDATION)
    for bad in ("abc", str(world.training.pk), "99999999"):
        refused = client.post(url, {"test_set": bad})
        assert refused.status_code == 400 and "test_set: no held-out test set" in text_of(refused)
    assert EvalRun.objects.count() == 2


def test_the_api_shortcut_takes_a_test_set(
    project: Project, lead: User, world: HeldOutWorld, fine_tuned: ModelVersion
) -> None:
    client = token_client(lead)
    url = f"/api/projects/{project.pk}/evaluations/"
    response = client.post(
        url, {"model_version": fine_tuned.pk, "test_set": world.test_set.pk}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["split"] == EvalSplit.ALL
    assert EvalRun.objects.get().dataset_version == world.test_set
    wrong = client.post(
        url, {"model_version": fine_tuned.pk, "test_set": world.training.pk}, format="json"
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "test_set"


def test_the_new_evaluation_form_draws_shots_from_a_chosen_training_version(
    project: Project, lead: User, world: HeldOutWorld, base_model: BaseModel
) -> None:
    client = Client()
    client.force_login(lead)
    url = reverse("eval_new", args=[project.pk])
    form = client.get(url).content.decode()
    select = form[
        form.index('id="eval-shots-version"') : form.index(
            "</select>", form.index('id="eval-shots-version"')
        )
    ]
    assert f'value="{world.training.pk}"' in select and f'value="{world.test_set.pk}"' not in select
    post = {
        "dataset_version": str(world.test_set.pk),
        "split": EvalSplit.VALIDATION,
        "base_model": base_model.key,
        "base_zero_shot": "1",
        "few_shot_k": "5",
    }
    refused = client.post(url, post)
    assert refused.status_code == 400 and "is a held-out test set" in text_of(refused)
    created = client.post(url, {**post, "shots_version": str(world.training.pk)})
    assert created.status_code == 302
    run = EvalRun.objects.get()
    assert run.split == EvalSplit.ALL
    assert run.candidates.get(prompting=Prompting.FEW_SHOT).shots_version == world.training


def test_contamination_reads_a_test_set_like_a_held_out_set(
    project: Project, lead: User, world: HeldOutWorld, fine_tuned: ModelVersion
) -> None:
    run = eval_run_for_version(
        project=project, model_version=fine_tuned, user=lead, test_set=world.test_set
    )
    (found,) = run_contamination(run)
    assert found.training_version == world.training and found.test_count == 300
    # The same pairs the freeze stored, those whose training item the model learned from.
    stored = world.test_set.test_overlaps["versions"][0]["pairs"]
    learned = [p for p in stored if p["training_split"] == Split.TRAIN]
    assert found.pair_count == len(learned) > 0
    assert {p["test_position"] for p in found.pairs} == {p["test_position"] for p in learned}


def test_a_test_set_of_another_project_is_not_offered(
    project: Project,
    lead: User,
    world: HeldOutWorld,
    fine_tuned: ModelVersion,
    make_member: Callable[..., User],
) -> None:
    other = Project.objects.create(name="Other ✓")
    other_lead = make_member(Role.ML_LEAD, target=other)
    theirs = dataset_version_freeze(
        dataset=approved_dataset(other, "theirs", tickets(10, seed=91)),
        user=other_lead,
        test_set=True,
    )
    client = Client()
    client.force_login(lead)
    page = client.get(reverse("job_detail", args=[project.pk, fine_tuned.training_job_id]))
    assert f'value="{theirs.pk}"' not in page.content.decode()
    refused = client.post(
        reverse("eval_create", args=[project.pk, fine_tuned.pk]), {"test_set": str(theirs.pk)}
    )
    assert refused.status_code == 400
    assert not EvalRun.objects.filter(dataset_version=theirs).exists()
    assert DatasetVersion.objects.filter(is_test_set=True).count() == 2
