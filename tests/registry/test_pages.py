"""The registry's pages: the promotion confirmation with its evidence, the rollback reason, the
version detail page with its lineage, and the registry's per-version scores and costs."""

from __future__ import annotations

import re
from decimal import Decimal
from html import unescape

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from ftportal.roles import Role
from registry.models import AliasChange, ModelVersion
from registry.selectors import production_version
from registry.services import model_version_promote, model_version_register
from tests.factories import finished_evaluation, frozen_version, production_number
from training.models import Checkpoint, JobStatus, TrainingJob

pytestmark = pytest.mark.django_db

RIGHT, WRONG = [1.0] * 10, [0.0] * 10


@pytest.fixture
def lead(make_member):
    return make_member(Role.ML_LEAD)


def register(project, lead, base_model, data, *, step: int | None = None) -> ModelVersion:
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=data,
        base_model=base_model,
        provider="local",
        hyperparameters={"epochs": 3, "learning_rate": 0.0002},
        model_name="triage",
        created_by=lead,
        status=JobStatus.SUCCEEDED,
        actual_cost_usd=Decimal("0.0123"),
        cost_basis="44 s of worker time (cpu)",
    )
    adapter = settings.FTPORTAL_ARTIFACTS_DIR / f"adapters/job-{job.pk}"
    checkpoint = None
    if step is not None:
        adapter = adapter / f"checkpoint-{step}"
        checkpoint = Checkpoint.objects.create(
            job=job, step=step, path=str(adapter), train_loss=0.8, val_loss=0.9
        )
    return model_version_register(
        job=job, checkpoint=checkpoint, adapter_dir=str(adapter), train_loss=0.8, val_loss=0.9
    )


@pytest.fixture
def versions(project, lead, base_model):
    """v1 in production (it beat its base model); v2, the checkpoint at step 30, not evaluated."""
    data = frozen_version(project, lead)
    v1 = register(project, lead, base_model, data)
    finished_evaluation(version=v1, against=None, scores=RIGHT, baseline_scores=WRONG, user=lead)
    model_version_promote(
        model_version=v1,
        expected_current_version=production_number(v1.registered_model),
        user=lead,
        reason="beats the base model",
    )
    return v1, register(project, lead, base_model, data, step=30)


def local_cost_per_1000() -> Decimal:
    """What the factory's answers (0.5 s each on a local model) cost per 1,000 requests at the
    configured hourly rate."""
    hourly = Decimal(str(settings.FTPORTAL_LOCAL_USD_PER_HOUR))
    return (Decimal("0.5") * hourly / 3600 * 1000).quantize(Decimal("0.0001"))


def text(response) -> str:
    return unescape(response.content.decode())


def words(response) -> str:
    """What a person reads: the text without tags, spaces collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


# What the promotion page posts when it showed v1 in production.
SEEN_V1 = {"expected_current_version": "1"}


def promote_url(version: ModelVersion) -> str:
    return reverse("version_promote", args=[version.registered_model.project_id, version.pk])


def test_a_version_without_evidence_gets_a_page_that_says_what_is_missing_and_no_promote_button(
    client: Client, versions, lead
) -> None:
    v1, v2 = versions
    client.force_login(lead)

    page = client.get(promote_url(v2))
    refused = client.post(promote_url(v2), {"reason": "newer", **SEEN_V1})

    assert page.status_code == 200
    missing = (
        "No finished evaluation of triage v2 against production triage v1 on the same test set"
    )
    assert missing in text(page)
    assert 'id="promote-confirm"' not in text(page)
    assert 'id="promote-override"' not in text(page)  # leads cannot override
    assert refused.status_code == 409
    assert missing in text(refused)
    assert production_version(v1.registered_model) == v1
    assert AliasChange.objects.count() == 1


def test_the_confirmation_page_shows_the_evidence_and_costs_and_promotes_with_the_reason(
    client: Client, versions, lead
) -> None:
    v1, v2 = versions
    run = finished_evaluation(
        version=v2, against=v1, scores=RIGHT, baseline_scores=WRONG, user=lead
    )
    client.force_login(lead)

    page = text(client.get(promote_url(v2)))

    assert f"Evaluation {run.pk}" in page
    assert "triage v2: 100.0 % · production triage v1: 0.0 %" in page
    assert "+100.0 to +100.0 points" in page
    cost = local_cost_per_1000()
    assert f"triage v2: ${cost} · production triage v1: ${cost}" in page
    assert 'id="evidence-verdict" class="status-succeeded">better<' in page
    # The verdict in words names the paired test and the one rule it was decided by.
    assert "McNemar exact p" in page
    assert "Rule: 95 % paired bootstrap CI excludes 0 and McNemar exact p < 0.05." in page

    response = client.post(promote_url(v2), {"reason": "ten of ten", "margin": "0", **SEEN_V1})

    assert response.status_code == 302
    assert production_version(v1.registered_model) == v2
    change = AliasChange.objects.order_by("-id")[0]
    assert (change.reason, change.evidence["eval_run_id"]) == ("ten of ten", run.pk)
    registry = words(client.get(reverse("model_list", args=[v1.registered_model.project_id])))
    assert f"better vs production triage v1 on exact match ( evaluation {run.pk} " in registry


def test_a_promotion_without_a_reason_is_refused_on_the_page(
    client: Client, versions, lead
) -> None:
    v1, v2 = versions
    finished_evaluation(version=v2, against=v1, scores=RIGHT, baseline_scores=WRONG, user=lead)
    client.force_login(lead)

    response = client.post(promote_url(v2), {"reason": "  ", **SEEN_V1})

    assert response.status_code == 400
    assert "Give a reason for the promotion." in text(response)
    assert production_version(v1.registered_model) == v1


def test_the_margin_decides_a_close_call_and_an_admin_may_override_a_refusal(
    client: Client, versions, lead, make_member
) -> None:
    v1, v2 = versions
    # v2 misses one of twelve items v1 gets right: no worse within 30 points, not within 10.
    finished_evaluation(
        version=v2, against=v1, scores=[1.0] * 11 + [0.0], baseline_scores=[1.0] * 12, user=lead
    )
    client.force_login(lead)
    assert "no worse than the margin" in text(client.get(promote_url(v2), {"margin": "30"}))
    strict = text(client.get(promote_url(v2), {"margin": "10"}))
    assert "not shown to be no worse" in strict and 'id="promote-confirm"' not in strict

    admin = make_member(Role.ADMIN)
    client.force_login(admin)
    assert 'id="promote-override"' in text(client.get(promote_url(v2), {"margin": "10"}))
    response = client.post(
        promote_url(v2),
        {"reason": "v1's base shuts down", "margin": "10", "override": "on", **SEEN_V1},
    )

    assert response.status_code == 302
    change = AliasChange.objects.order_by("-id")[0]
    assert change.overridden and change.changed_by == admin
    assert change.evidence["margin_points"] == 10.0
    registry = text(client.get(reverse("model_list", args=[v1.registered_model.project_id])))
    assert "admin override" in registry


def test_rollback_asks_for_a_reason_and_keeps_it(client: Client, versions, lead) -> None:
    v1, v2 = versions
    finished_evaluation(version=v2, against=v1, scores=RIGHT, baseline_scores=WRONG, user=lead)
    model_version_promote(
        model_version=v2,
        expected_current_version=production_number(v2.registered_model),
        user=lead,
        reason="better",
    )
    project_id = v1.registered_model.project_id
    rollback = reverse("model_rollback", args=[project_id, v1.registered_model_id])
    client.force_login(lead)

    registry = text(client.get(reverse("model_list", args=[project_id])))
    seen = {"expected_current_version": "2", "target_version": "1"}
    refused = client.post(rollback, seen)
    done = client.post(rollback, {"reason": "complaints since the release", **seen})

    assert 'name="reason" required' in registry
    assert "rolled back from the registry page" not in registry
    assert refused.status_code == 400
    assert "Give a reason for the rollback." in text(refused)
    assert done.status_code == 302
    assert production_version(v1.registered_model) == v1
    assert AliasChange.objects.order_by("-id")[0].reason == "complaints since the release"


def test_the_version_page_shows_its_lineage_scores_and_history_and_no_server_path(
    client: Client, versions, lead, make_member
) -> None:
    v1, v2 = versions
    run = finished_evaluation(
        version=v2, against=v1, scores=[1.0] * 5 + [0.0] * 5, baseline_scores=WRONG, user=lead
    )
    client.force_login(make_member(Role.MANAGER))
    project_id = v2.registered_model.project_id

    response = client.get(f"/projects/{project_id}/models/{v2.pk}/")

    assert response.status_code == 200
    page = text(response)
    data = v2.dataset_version
    assert reverse("version_detail", args=[project_id, data.pk]) in page
    assert f"{data.example_count} examples" in page
    assert "SmolLM2-135M-Instruct" in page
    assert reverse("job_detail", args=[project_id, v2.training_job_id]) in page
    assert 'id="version-checkpoint">step 30<' in page
    assert "Learning rate: 0.0002" in page
    assert "$0.0123 (44 s of worker time (cpu))" in page
    assert f"Evaluation {run.pk}" in page and "50.0 % exact match" in page
    assert f"adapters/job-{v2.training_job_id}/checkpoint-30" in page
    assert str(settings.FTPORTAL_ARTIFACTS_DIR) not in page
    assert "Promote to production" not in page  # a manager reads, and changes nothing
    job_page = text(client.get(reverse("job_detail", args=[project_id, v2.training_job_id])))
    # Its checkpoints by their place in the store, not by (the end of) a server path.
    assert f"<code>adapters/job-{v2.training_job_id}/checkpoint-30</code>" in job_page
    assert str(settings.FTPORTAL_ARTIFACTS_DIR) not in job_page
    v1_page = text(client.get(f"/projects/{project_id}/models/{v1.pk}/"))
    assert "beats the base model" in v1_page  # its alias history


def test_the_registry_shows_each_versions_latest_score_serving_and_training_cost(
    client: Client, versions, lead
) -> None:
    v1, v2 = versions
    finished_evaluation(
        version=v1, against=None, scores=[1.0] * 3 + [0.0] * 7, baseline_scores=WRONG, user=lead
    )
    client.force_login(lead)
    project_id = v1.registered_model.project_id

    response = client.get(reverse("model_list", args=[project_id]))

    page = text(response)
    v1_row = page[page.index(f'id="version-{v1.pk}"') :]
    v2_row = page[page.index(f'id="version-{v2.pk}"') : page.index(f'id="version-{v1.pk}"')]
    assert "30.0 % exact match" in v1_row  # the latest evaluation, not the first (100 %)
    assert "$0.0123" in v1_row and f"${local_cost_per_1000()}" in v1_row
    assert "not evaluated" in v2_row
    assert f'href="/projects/{project_id}/models/{v2.pk}/"' in v2_row
    assert str(settings.FTPORTAL_ARTIFACTS_DIR) not in page
