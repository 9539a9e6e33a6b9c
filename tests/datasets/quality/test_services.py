"""Analysis runs stored in the database, the duplicate bulk fix, and the readiness report."""

from __future__ import annotations

import pytest

from catalog.models import BaseModel
from datasets.models import (
    AnalysisRun,
    AnalysisStatus,
    DatasetVersion,
    Example,
    ExampleStatus,
    Finding,
    ReviewAction,
    ReviewDecision,
)
from datasets.quality.selectors import duplicate_fix_count
from datasets.quality.services import (
    analysis_run_create,
    analysis_run_execute,
    dataset_version_readiness,
    exact_duplicates_reject,
)
from datasets.services import dataset_version_freeze, example_review
from ftportal.errors import ConflictError

from .builders import planted_dataset, user
from .conftest import convo

pytestmark = pytest.mark.django_db


@pytest.fixture
def openai_model(db) -> BaseModel:
    model, _ = BaseModel.objects.get_or_create(
        key="gpt-4o-mini-2024-07-18",
        defaults={
            "display_name": "GPT-4o mini",
            "provider": "openai",
            "tokenizer": "o200k_base",
            "context_window": 65536,
            "training_usd_per_million_tokens": "3.00",
            "is_active": False,
        },
    )
    return model


def executed(dataset, base_model, who):
    run = analysis_run_create(dataset=dataset, base_model=base_model, user=who)
    return analysis_run_execute(run_id=run.pk)


def test_an_analysis_stores_stats_and_findings_for_unrejected_examples(project, base_model):
    dataset, made = planted_dataset(project)
    run = executed(dataset, base_model, user())
    assert run.status == AnalysisStatus.SUCCEEDED and run.finished_at
    findings = {(f.example_id, f.kind) for f in Finding.objects.filter(run=run)}
    assert (made["dup_pending"].pk, "exact_duplicate") in findings
    assert (made["dup_approved"].pk, "exact_duplicate") in findings
    assert all(example_id != made["dup_rejected"].pk for example_id, _ in findings)
    assert (made["email"].pk, "pii_email") in findings
    assert (made["empty"].pk, "empty_content") in findings
    assert not any(example_id == made["clean0"].pk for example_id, _ in findings)
    stats = run.stats
    assert stats["examples"] == 9
    assert stats["findings"]["exact_duplicate"]["examples"] == 2
    assert stats["findings"]["empty_content"]["severity"] == "error"
    assert stats["cost_usd"] is None and stats["cost_note"] == "local: no per-token price"
    assert stats["tokenizer"] == "local:smollm2-135m-instruct"
    assert stats["prompt_tokens"]["min"] > 0


def test_an_openai_model_counts_with_its_encoding_and_prices_the_tokens(project, openai_model):
    dataset, _ = planted_dataset(project)
    run = executed(dataset, openai_model, user())
    assert run.stats["tokenizer"] == "tiktoken:o200k_base"
    expected = run.stats["training_tokens"] * 3.0 / 1_000_000
    assert run.stats["cost_usd"] == pytest.approx(expected, abs=1e-4)


def test_a_run_with_an_unknown_model_fails_with_its_reason(project):
    dataset, _ = planted_dataset(project)
    run = AnalysisRun.objects.create(dataset=dataset, base_model_key="gone", created_by=user())
    run = analysis_run_execute(run_id=run.pk)
    assert run.status == AnalysisStatus.FAILED
    assert "'gone' is not in the catalog" in run.failure_message
    assert not Finding.objects.filter(run=run).exists()


def test_a_second_delivery_of_a_finished_run_changes_nothing(project, base_model):
    dataset, _ = planted_dataset(project)
    run = executed(dataset, base_model, user())
    findings = sorted(Finding.objects.filter(run=run).values_list("id", flat=True))
    again = analysis_run_execute(run_id=run.pk)
    assert (again.status, again.finished_at) == (AnalysisStatus.SUCCEEDED, run.finished_at)
    assert sorted(Finding.objects.filter(run=run).values_list("id", flat=True)) == findings


def test_a_run_left_running_by_a_lost_worker_starts_over_and_finishes(project, base_model):
    dataset, made = planted_dataset(project)
    run = analysis_run_create(dataset=dataset, base_model=base_model, user=user())
    # What a worker killed mid-analysis leaves behind: running, nothing stored.
    AnalysisRun.objects.filter(pk=run.pk).update(status=AnalysisStatus.RUNNING)
    finished = analysis_run_execute(run_id=run.pk)
    assert finished.status == AnalysisStatus.SUCCEEDED
    assert Finding.objects.filter(run=run, example=made["dup_pending"]).exists()


def test_a_second_analysis_is_refused_while_one_is_unfinished(project, base_model):
    dataset, _ = planted_dataset(project)
    analyst = user()
    first = analysis_run_create(dataset=dataset, base_model=base_model, user=analyst)
    with pytest.raises(ConflictError, match=f"Analysis {first.pk} of this dataset is still queued"):
        analysis_run_create(dataset=dataset, base_model=base_model, user=analyst)
    assert list(AnalysisRun.objects.filter(dataset=dataset)) == [first]
    analysis_run_execute(run_id=first.pk)
    assert analysis_run_create(dataset=dataset, base_model=base_model, user=analyst).pk != first.pk


def test_creating_a_run_queues_the_task_only_after_commit(
    project, base_model, monkeypatch, django_capture_on_commit_callbacks
):
    queued: list[int] = []
    from datasets import tasks

    monkeypatch.setattr(tasks.run_analysis, "delay", lambda run_id: queued.append(run_id))
    dataset, _ = planted_dataset(project)
    with django_capture_on_commit_callbacks(execute=True):
        run = analysis_run_create(dataset=dataset, base_model=base_model, user=user())
        assert queued == []
    assert queued == [run.pk]
    assert run.status == AnalysisStatus.QUEUED


def test_the_bulk_fix_keeps_the_approved_copy_and_logs_each_rejection(project, base_model):
    dataset, made = planted_dataset(project)
    reviewer = user("rita")
    run = executed(dataset, base_model, reviewer)
    assert duplicate_fix_count(run) == 1
    before = made["dup_pending"].revision
    assert exact_duplicates_reject(run=run, user=reviewer) == 1
    rejected = Example.objects.get(pk=made["dup_pending"].pk)
    kept = Example.objects.get(pk=made["dup_approved"].pk)
    assert rejected.status == ExampleStatus.REJECTED and rejected.revision == before + 1
    assert kept.status == ExampleStatus.APPROVED
    decision = ReviewDecision.objects.get(example=rejected)
    assert decision.action == ReviewAction.REJECT and decision.reviewer == reviewer
    assert f"duplicate of example {kept.pk}" in decision.comment
    # The run is now stale: doing it twice is refused rather than rejecting more.
    with pytest.raises(ConflictError, match="changed since analysis run"):
        exact_duplicates_reject(run=run, user=reviewer)


def test_without_an_approved_copy_the_earliest_is_kept(project, base_model):
    dataset, _ = planted_dataset(project)
    copies = [
        Example.objects.create(dataset=dataset, messages=convo("Mouse broken", "hardware"))
        for _ in range(3)
    ]
    run = executed(dataset, base_model, user())
    exact_duplicates_reject(run=run, user=user("r2"))
    statuses = [Example.objects.get(pk=e.pk).status for e in copies]
    assert statuses == [ExampleStatus.PENDING, ExampleStatus.REJECTED, ExampleStatus.REJECTED]


def test_the_bulk_fix_refuses_a_stale_run_and_changes_nothing(project, base_model):
    dataset, made = planted_dataset(project)
    reviewer = user("rita")
    run = executed(dataset, base_model, reviewer)
    example_review(example=made["clean0"], user=reviewer, action=ReviewAction.APPROVE)
    statuses = dict(Example.objects.values_list("pk", "status"))
    decisions = ReviewDecision.objects.count()
    with pytest.raises(ConflictError, match="run the analysis again"):
        exact_duplicates_reject(run=run, user=reviewer)
    assert dict(Example.objects.values_list("pk", "status")) == statuses
    assert ReviewDecision.objects.count() == decisions


def test_readiness_is_computed_from_the_frozen_items_and_cached(project, base_model):
    dataset, made = planted_dataset(project)
    lead = user("lead")
    for example in Example.objects.filter(dataset=dataset).exclude(status=ExampleStatus.REJECTED):
        if example.status != ExampleStatus.APPROVED:
            example_review(example=example, user=lead, action=ReviewAction.APPROVE)
    version = dataset_version_freeze(dataset=dataset, user=lead)
    report = dataset_version_readiness(version=version)
    assert report["band"] == "insufficient" and report["label"] == "insufficient data"
    assert report["validation_split"]["present"] is True
    assert report["findings"]["pii_email"]["examples"] == 1
    assert report["findings"]["empty_content"]["severity"] == "error"
    assert report["tokens"]["tokens_per_epoch"] > 0
    stored = DatasetVersion.objects.get(pk=version.pk).readiness
    assert stored == report
    # Later edits to the live example do not change the frozen version's report.
    example_review(example=made["email"], user=lead, action=ReviewAction.EDIT, new_answer="x")
    again = dataset_version_readiness(version=DatasetVersion.objects.get(pk=version.pk))
    assert again["computed_at"] == report["computed_at"]
