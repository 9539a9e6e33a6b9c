"""Nobody waits on a worker that is not there without being told: every worker process
records which queues it consumes; the pages that wait on a queue, and /healthz, say when no
worker listens on it; a running job whose worker fell silent says so instead of an estimate."""

from __future__ import annotations

import datetime
import json

import pytest
from django.urls import reverse
from django.utils import timezone

from catalog.models import BaseModel, Provider
from datasets.models import Dataset, ImportBatch, ImportStatus
from evaluation.models import EvalRun, EvalStatus
from ftportal.models import WorkerPresence
from ftportal.roles import Role
from ftportal.selectors import known_queues, queue_attendance, queues_attendance
from tests.factories import frozen_version
from training.models import JobStatus, TrainingJob

pytestmark = pytest.mark.django_db

WARNING = "No worker is listening on the"


def seen(name: str, queues: list[str], *, ago_s: float, stopped: bool = False) -> WorkerPresence:
    """A worker's row as it would have written it ``ago_s`` seconds ago."""
    at = timezone.now() - datetime.timedelta(seconds=ago_s)
    return WorkerPresence.objects.create(
        name=name,
        hostname=name.split(":")[0],
        pid=1234,
        queues=queues,
        started_at=at - datetime.timedelta(hours=1),
        last_seen=at,
        stopped_at=at if stopped else None,
    )


def test_every_routed_queue_is_known_and_unattended_without_workers():
    assert known_queues() == ["default", "inference", "training"]
    attendance = queues_attendance()
    assert set(attendance) == {"default", "inference", "training"}
    assert not any(queue.attended for queue in attendance.values())
    assert attendance["training"].last_seen is None


def test_a_queue_is_attended_by_a_live_worker_only(settings):
    settings.FTPORTAL_WORKER_STALE_SECONDS = 30
    seen("trainer@gpu:1", ["training"], ago_s=5)
    gone = seen("worker@a:2", ["default", "inference"], ago_s=200)
    seen("worker@b:3", ["inference"], ago_s=1, stopped=True)

    attendance = queues_attendance()

    assert attendance["training"].attended and attendance["training"].workers == 1
    assert not attendance["default"].attended
    assert attendance["default"].last_seen == gone.last_seen
    # A clean shutdown counts at once, and is the latest sighting of the queue.
    assert not attendance["inference"].attended
    assert attendance["inference"].last_seen > gone.last_seen
    assert queue_attendance("nobody-routes-here").workers == 0


def test_healthz_reports_every_queue_and_stays_200_when_degraded(client, settings):
    settings.FTPORTAL_WORKER_STALE_SECONDS = 30
    seen("worker@a:2", ["default", "inference"], ago_s=5)
    last = seen("trainer@gpu:1", ["training"], ago_s=120)

    response = client.get("/healthz")

    assert response.status_code == 200
    body = json.loads(response.content)
    assert body["status"] == "degraded" and body["database"] == "ok"
    assert body["queues"]["default"]["workers"] == 1
    assert body["queues"]["inference"]["workers"] == 1
    assert body["queues"]["training"] == {
        "workers": 0,
        "last_seen": last.last_seen.isoformat(),
    }
    required = client.get("/healthz?workers=required")
    assert required.status_code == 503
    assert json.loads(required.content)["status"] == "degraded"


def test_healthz_with_workers_required_is_ok_when_every_queue_has_one(client):
    seen("worker@a:2", ["default", "inference", "training"], ago_s=1)

    response = client.get("/healthz?workers=required")

    assert response.status_code == 200
    assert json.loads(response.content)["status"] == "ok"


@pytest.fixture
def lead_client(client, make_member):
    lead = make_member(Role.ML_LEAD)
    client.force_login(lead)
    client.lead = lead
    return client


def local_job(project, base_model, version, user, **fields) -> TrainingJob:
    return TrainingJob.objects.create(
        project=project,
        dataset_version=version,
        base_model=base_model,
        provider=base_model.provider,
        hyperparameters={"epochs": 1},
        model_name="triage",
        created_by=user,
        **fields,
    )


def test_a_queued_job_warns_that_no_worker_listens_on_the_training_queue(
    lead_client, project, base_model, settings
):
    settings.FTPORTAL_WORKER_STALE_SECONDS = 30
    version = frozen_version(project, lead_client.lead)
    job = local_job(project, base_model, version, lead_client.lead)
    seen("worker@a:2", ["default", "inference"], ago_s=1)
    seen("trainer@gpu:9", ["training"], ago_s=190)
    url = reverse("job_detail", args=[project.pk, job.pk])

    page = lead_client.get(url).content.decode()

    assert f"{WARNING} training queue (last seen 3\xa0minutes ago)" in page
    assert "this job will wait until one starts" in page
    # The status poll carries it too, so it appears and goes without a reload.
    assert WARNING in lead_client.get(url, headers={"HX-Request": "true"}).content.decode()

    seen("trainer@gpu:10", ["training"], ago_s=1)
    assert WARNING not in lead_client.get(url).content.decode()


def test_a_running_job_whose_worker_fell_silent_says_so_instead_of_an_estimate(
    lead_client, project, base_model, settings
):
    settings.FTPORTAL_HEARTBEAT_STALE_SECONDS = 30
    seen("worker@a:2", ["default", "inference", "training"], ago_s=1)
    version = frozen_version(project, lead_client.lead)
    now = timezone.now()
    job = local_job(
        project,
        base_model,
        version,
        lead_client.lead,
        status=JobStatus.RUNNING,
        started_at=now - datetime.timedelta(seconds=400),
        heartbeat_at=now - datetime.timedelta(seconds=168),
        step=2,
        total_steps=10,
        seconds_left=63,
    )
    url = reverse("job_detail", args=[project.pk, job.pk])

    page = lead_client.get(url).content.decode()

    assert "no word from the worker for 168 s" in page
    assert "s left" not in page

    TrainingJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())
    page = lead_client.get(url).content.decode()
    assert "about 63 s left" in page and "no word from the worker" not in page


def test_a_hosted_job_is_polled_less_often_so_its_silence_counts_later(
    lead_client, project, settings
):
    settings.FTPORTAL_HEARTBEAT_STALE_SECONDS = 30
    settings.FTPORTAL_HOSTED_POLL_STALE_SECONDS = 90
    hosted, _ = BaseModel.objects.update_or_create(
        key="gpt-4o-mini-2024-07-18",
        defaults={"display_name": "GPT-4o mini", "provider": Provider.OPENAI},
    )
    version = frozen_version(project, lead_client.lead)
    job = local_job(
        project,
        hosted,
        version,
        lead_client.lead,
        status=JobStatus.RUNNING,
        started_at=timezone.now() - datetime.timedelta(seconds=600),
        heartbeat_at=timezone.now() - datetime.timedelta(seconds=60),
        seconds_left=300,
    )
    seen("trainer@gpu:1", ["training"], ago_s=1)
    url = reverse("job_detail", args=[project.pk, job.pk])

    page = lead_client.get(url).content.decode()

    assert "about 300 s left" in page and "no word from the worker" not in page
    # Its polls run on the default queue, which nobody consumes here.
    assert f"{WARNING} default queue" in page

    TrainingJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - datetime.timedelta(seconds=100)
    )
    assert "no word from the worker for 100 s" in lead_client.get(url).content.decode()


def test_the_launch_page_warns_before_a_job_is_started(lead_client, project, base_model):
    version = frozen_version(project, lead_client.lead)
    url = reverse("job_launch", args=[project.pk, version.pk])

    page = lead_client.get(url).content.decode()

    assert f"{WARNING} training queue (none seen yet)" in page
    assert "a job started now will wait until one starts" in page

    seen("trainer@gpu:1", ["training"], ago_s=1)
    assert WARNING not in lead_client.get(url).content.decode()


def test_the_evaluation_pages_warn_about_the_inference_queue(lead_client, project, settings):
    settings.FTPORTAL_HEARTBEAT_STALE_SECONDS = 30
    version = frozen_version(project, lead_client.lead)
    run = EvalRun.objects.create(
        project=project,
        dataset_version=version,
        created_by=lead_client.lead,
        status=EvalStatus.RUNNING,
        started_at=timezone.now() - datetime.timedelta(seconds=300),
        heartbeat_at=timezone.now() - datetime.timedelta(seconds=95),
    )
    new_url = reverse("eval_new", args=[project.pk])
    run_url = reverse("eval_detail", args=[project.pk, run.pk])
    seen("worker@a:2", ["default", "training"], ago_s=1)

    new_page = lead_client.get(new_url).content.decode()
    run_page = lead_client.get(run_url).content.decode()

    assert f"{WARNING} inference queue" in new_page
    assert "an evaluation started now will wait" in new_page
    assert f"{WARNING} inference queue" in run_page
    assert "this evaluation will wait" in run_page
    assert "no word from the worker for 95 s" in run_page

    seen("worker@b:3", ["inference"], ago_s=1)
    assert WARNING not in lead_client.get(new_url).content.decode()
    assert WARNING not in lead_client.get(run_url).content.decode()


def test_a_background_import_warns_while_no_worker_listens_on_the_default_queue(
    lead_client, project
):
    dataset = Dataset.objects.create(project=project, name="tickets")
    batch = ImportBatch.objects.create(
        dataset=dataset,
        filename="tickets.jsonl",
        uploaded_by=lead_client.lead,
        status=ImportStatus.QUEUED,
        size_bytes=10_000_000,
    )
    url = reverse("import_detail", args=[project.pk, batch.pk])

    page = lead_client.get(url).content.decode()

    assert f"{WARNING} default queue (none seen yet); this import will wait" in page

    seen("worker@a:2", ["default"], ago_s=1)
    assert WARNING not in lead_client.get(url).content.decode()
